//! The XDP object built with lb-ebpf's test-only `upgrade-test` feature: another program
//! over the same maps, for tests that upgrade a running data path.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::{ebpf_object, target_dir, workspace_root};

/// Builds the variant (once per process, in `<target>/upgrade-test`, next to the default
/// object's build so neither overwrites the other) and returns its path. Uses the
/// bpf-linker `cargo xtask build-ebpf` installed. Panics with cargo's output on failure.
pub fn upgrade_object() -> PathBuf {
    static OBJECT: OnceLock<PathBuf> = OnceLock::new();
    OBJECT
        .get_or_init(|| {
            // Makes sure rust-src and bpf-linker are there.
            ebpf_object();
            let target = target_dir();
            let linker_dir = target.join("tools/bin");
            let mut path = vec![linker_dir];
            path.extend(std::env::split_paths(
                &std::env::var_os("PATH").unwrap_or_default(),
            ));
            let path = std::env::join_paths(path)
                .unwrap_or_else(|e| panic!("PATH for the eBPF build: {e}"));
            let dir = target.join("upgrade-test");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
            eprintln!("sluice-tests: building the upgrade-test XDP object (once per test process)");
            let output = Command::new(cargo)
                .current_dir(workspace_root())
                .args(["build", "--package", "lb-ebpf", "--release"])
                .args([
                    "--features",
                    "upgrade-test",
                    "--target",
                    "bpfel-unknown-none",
                ])
                .args(["-Z", "build-std=core", "--target-dir"])
                .arg(&dir)
                .env("PATH", path)
                .env("RUSTC_BOOTSTRAP", "1")
                .env(
                    "CARGO_ENCODED_RUSTFLAGS",
                    ["-Cdebuginfo=2", "-Clink-arg=--btf"].join("\x1f"),
                )
                .env("CARGO_PROFILE_RELEASE_LTO", "false")
                .env_remove("RUSTFLAGS")
                .output()
                .unwrap_or_else(|e| panic!("running cargo: {e}"));
            assert!(
                output.status.success(),
                "building the upgrade-test XDP object failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            let object = dir.join("bpfel-unknown-none/release/lb-ebpf");
            assert!(object.is_file(), "{} is missing", object.display());
            object
        })
        .clone()
}
