//! `cargo xtask build` and `cargo xtask run`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

use crate::shell::{self, step};
use crate::{ebpf, workspace};

/// Builds the XDP program, then the agent (which embeds it). Returns the agent's path.
pub fn build_all(release: bool) -> Result<PathBuf> {
    ebpf::build()?;
    step("Building", "sluice (lb-userspace)");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace::root()).args([
        "build",
        "--package",
        "lb-userspace",
        "--bin",
        "sluice",
    ]);
    if release {
        cmd.arg("--release");
    }
    shell::run(
        &mut cmd,
        "the agent did not compile; the errors above say where",
    )?;
    let profile = if release { "release" } else { "debug" };
    Ok(workspace::target_dir().join(profile).join("sluice"))
}

/// Builds everything and runs `sluice ARGS` as root, through sudo when we are not root.
pub fn run(release: bool, args: &[String]) -> Result<()> {
    let sluice = build_all(release)?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let mut cmd = if root {
        Command::new(&sluice)
    } else {
        step(
            "Running",
            "through sudo: loading XDP programs needs root (or CAP_BPF + CAP_NET_ADMIN)",
        );
        let mut c = Command::new("sudo");
        c.arg("--preserve-env=RUST_LOG").arg(&sluice);
        c
    };
    cmd.args(args);
    step(
        "Running",
        &format!("{} {}", sluice.display(), args.join(" ")),
    );
    let status = cmd
        .status()
        .with_context(|| format!("could not start {}", sluice.display()))?;
    std::process::exit(status.code().unwrap_or(1));
}
