//! Embeds the XDP object built by `cargo xtask build-ebpf` into the agent, so `sluice` is one
//! self-contained file. When the object is missing (a plain `cargo build` on a fresh clone) an
//! empty placeholder is embedded and `sluice run` explains how to build it.

use std::path::PathBuf;

fn main() {
    println!("cargo::rerun-if-env-changed=SLUICE_EBPF_OBJECT");
    println!("cargo::rerun-if-env-changed=CARGO_TARGET_DIR");
    let object = match std::env::var_os("SLUICE_EBPF_OBJECT") {
        Some(path) => PathBuf::from(path),
        None => target_dir().join("bpfel-unknown-none/release/lb-ebpf"),
    };
    // A missing path makes cargo rerun this script on every build, so the object is picked up
    // as soon as it exists.
    println!("cargo::rerun-if-changed={}", object.display());

    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let embedded = out_dir.join("lb-ebpf.o");
    match std::fs::read(&object) {
        Ok(bytes) => std::fs::write(&embedded, bytes).expect("writing into OUT_DIR"),
        Err(_) => {
            println!(
                "cargo::warning=XDP object {} not found: `sluice run` will not work until you \
                 run `cargo xtask build-ebpf` (or `cargo xtask build`)",
                object.display()
            );
            std::fs::write(&embedded, []).expect("writing into OUT_DIR");
        }
    }
}

fn target_dir() -> PathBuf {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let workspace = manifest.parent().map(PathBuf::from).unwrap_or(manifest);
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace.join(dir),
        _ => workspace.join("target"),
    }
}
