//! Building the XDP program: rust-src, bpf-linker against rustc's own LLVM, then
//! `cargo build --target bpfel-unknown-none -Z build-std=core` on the stable toolchain.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::shell::{self, step};
use crate::workspace;

const TARGET: &str = "bpfel-unknown-none";

/// Builds `lb-ebpf` and returns the path of the object file.
pub fn build() -> Result<PathBuf> {
    ensure_rust_src()?;
    let linker_dir = ensure_bpf_linker()?;

    step("Building", "lb-ebpf (XDP program) for bpfel-unknown-none");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![linker_dir];
    dirs.extend(std::env::split_paths(&path));
    let path = std::env::join_paths(dirs).context("PATH holds a folder with a ':' in its name")?;
    // BTF lets the kernel and bpftool show map and program types; debuginfo=2 feeds it.
    let rustflags = ["-Cdebuginfo=2", "-Clink-arg=--btf"].join("\x1f");
    shell::run(
        Command::new(cargo())
            .current_dir(workspace::root())
            .args([
                "build",
                "--package",
                "lb-ebpf",
                "--release",
                "--target",
                TARGET,
            ])
            .args(["-Z", "build-std=core"])
            .env("PATH", path)
            // build-std is unstable; allow it for this one build only, never globally.
            .env("RUSTC_BOOTSTRAP", "1")
            .env("CARGO_ENCODED_RUSTFLAGS", rustflags)
            // The workspace's release LTO is for the agent; bpf-linker links the program's
            // bitcode itself.
            .env("CARGO_PROFILE_RELEASE_LTO", "false")
            .env_remove("RUSTFLAGS"),
        "the XDP program did not compile; the errors above say where",
    )?;
    let object = object_path();
    if !object.is_file() {
        bail!("cargo reported success but {} is missing", object.display());
    }
    step("Finished", &format!("XDP object at {}", object.display()));
    Ok(object)
}

/// Where `build` leaves the XDP object. The agent's build script embeds it from here.
pub fn object_path() -> PathBuf {
    workspace::target_dir()
        .join(TARGET)
        .join("release")
        .join("lb-ebpf")
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn sysroot() -> Result<PathBuf> {
    let out = shell::stdout(Command::new("rustc").args(["--print", "sysroot"]))
        .context("rustc is not on PATH: install Rust with rustup")?;
    Ok(PathBuf::from(out))
}

/// `-Z build-std=core` compiles core from source, which the `rust-src` component provides.
fn ensure_rust_src() -> Result<()> {
    let library = sysroot()?.join("lib/rustlib/src/rust/library/core");
    if library.is_dir() {
        return Ok(());
    }
    step(
        "Installing",
        "rustup component rust-src (needed to build core for BPF)",
    );
    shell::run(
        Command::new("rustup").args(["component", "add", "rust-src"]),
        "install rustup (https://rustup.rs) or add the rust-src component by hand",
    )
}

/// Installs bpf-linker into `target/tools` (once), built against the LLVM that rustc itself
/// ships, so their LLVM majors always match. Returns the folder holding the binary.
fn ensure_bpf_linker() -> Result<PathBuf> {
    let tools = workspace::tools_dir();
    let bin_dir = tools.join("bin");
    let linker = bin_dir.join("bpf-linker");
    let rustc_llvm = rustc_llvm_version()?;
    let stamp = tools.join("bpf-linker.llvm");
    let installed_for = fs::read_to_string(&stamp).unwrap_or_default();
    if linker.is_file() && installed_for.trim() == rustc_llvm && runs(&linker) {
        return Ok(bin_dir);
    }

    let major = rustc_llvm
        .split('.')
        .next()
        .filter(|m| !m.is_empty())
        .context("rustc -vV printed no LLVM version")?;
    let prefix = llvm_prefix(&sysroot()?)?;
    step(
        "Installing",
        &format!(
            "bpf-linker against rustc's LLVM {rustc_llvm} into {} (about two minutes, once)",
            tools.display()
        ),
    );
    shell::run(
        Command::new(cargo())
            .args(["install", "bpf-linker", "--locked", "--no-default-features"])
            .args(["--features", &format!("llvm-{major}")])
            .arg("--root")
            .arg(&tools)
            .env("LLVM_PREFIX", &prefix)
            .env_remove("RUSTC_BOOTSTRAP"),
        "bpf-linker did not build; it needs crates.io access and a C++ toolchain (apt-get install build-essential)",
    )?;
    if !runs(&linker) {
        bail!(
            "bpf-linker was installed at {} but does not run; remove {} and retry",
            linker.display(),
            tools.display()
        );
    }
    fs::write(&stamp, &rustc_llvm).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(bin_dir)
}

fn runs(binary: &Path) -> bool {
    Command::new(binary)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn rustc_llvm_version() -> Result<String> {
    let info = shell::stdout(Command::new("rustc").arg("-vV"))?;
    info.lines()
        .find_map(|l| l.strip_prefix("LLVM version:"))
        .map(|v| v.trim().to_string())
        .context("rustc -vV printed no 'LLVM version:' line")
}

/// Makes `target/llvm-prefix/lib` hold `libLLVM.so` (for the build to link) and a link under
/// the library's own file name (its SONAME, for the binary to load), both pointing at the
/// `libLLVM` that ships inside rustc's sysroot. No LLVM development package is needed.
fn llvm_prefix(sysroot: &Path) -> Result<PathBuf> {
    let lib_dir = sysroot.join("lib");
    let library = fs::read_dir(&lib_dir)
        .with_context(|| format!("reading {}", lib_dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM"))
        })
        // The real library, not the small linker script beside it.
        .max_by_key(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .with_context(|| {
            format!(
                "no libLLVM in {}: this Rust toolchain does not ship LLVM as a shared library",
                lib_dir.display()
            )
        })?;
    let prefix = workspace::target_dir().join("llvm-prefix");
    let dir = prefix.join("lib");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let file_name = library
        .file_name()
        .context("libLLVM path has no file name")?;
    for name in [std::ffi::OsStr::new("libLLVM.so"), file_name] {
        let link = dir.join(name);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&library, &link)
            .with_context(|| format!("linking {} to {}", link.display(), library.display()))?;
    }
    Ok(prefix)
}
