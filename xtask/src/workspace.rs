//! Where the workspace and its build output live.

use std::path::PathBuf;

/// The workspace root (the folder holding the top-level Cargo.toml).
pub fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Cargo's target folder, honouring `CARGO_TARGET_DIR`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                root().join(dir)
            }
        }
        _ => root().join("target"),
    }
}

/// Tools the xtask installs for this workspace (bpf-linker), kept under `target/` so a
/// `cargo clean` or a fresh clone starts from nothing and CI can cache them.
pub fn tools_dir() -> PathBuf {
    target_dir().join("tools")
}
