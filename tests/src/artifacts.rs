//! The build products tests run: the XDP object and the `sluice` agent, built once per process.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set (a relative one is taken from the
/// workspace root), else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    let root = workspace_root();
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

/// Builds the eBPF object with `cargo xtask build-ebpf` (once per process) and returns its
/// path, `<target>/bpfel-unknown-none/release/lb-ebpf`. Panics with cargo's output when the
/// build fails.
pub fn ebpf_object() -> PathBuf {
    static OBJECT: OnceLock<PathBuf> = OnceLock::new();
    OBJECT
        .get_or_init(|| {
            cargo(&["xtask", "build-ebpf"]);
            built(target_dir().join("bpfel-unknown-none/release/lb-ebpf"))
        })
        .clone()
}

/// Builds the agent with `cargo build -p lb-userspace --bin sluice` (once per process) and
/// returns its path, `<target>/debug/sluice`. The XDP object is built first, because the
/// agent embeds it. Panics with cargo's output when a build fails.
pub fn sluice_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            ebpf_object();
            cargo(&["build", "-p", "lb-userspace", "--bin", "sluice"]);
            built(target_dir().join("debug/sluice"))
        })
        .clone()
}

/// Runs cargo from the workspace root against [`target_dir`]; panics with its stderr on failure.
fn cargo(args: &[&str]) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    eprintln!(
        "sluice-tests: cargo {} (once per test process)",
        args.join(" ")
    );
    let output = Command::new(&cargo)
        .args(args)
        .current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .unwrap_or_else(|e| panic!("running {cargo:?} {}: {e}", args.join(" ")));
    assert!(
        output.status.success(),
        "cargo {} failed ({}):\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `path`, after checking the build produced it.
fn built(path: PathBuf) -> PathBuf {
    assert!(
        path.is_file(),
        "the build succeeded but {} does not exist",
        path.display()
    );
    path
}
