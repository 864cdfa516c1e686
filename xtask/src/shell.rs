//! Running commands with their invocation printed, and failing with what to do.

use std::io::IsTerminal;
use std::process::{Command, Output};

use anyhow::{Context, Result, bail};

/// Prints a step the way cargo does, so the user sees what the xtask is doing.
pub fn step(what: &str, detail: &str) {
    if std::io::stderr().is_terminal() {
        eprintln!("\x1b[1;32m{what:>12}\x1b[0m {detail}");
    } else {
        eprintln!("{what:>12} {detail}");
    }
}

/// Runs `cmd` with inherited stdio; fails with `hint` when it exits non-zero.
pub fn run(cmd: &mut Command, hint: &str) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start {shown}: {hint}"))?;
    if !status.success() {
        bail!("{shown} failed ({status}): {hint}");
    }
    Ok(())
}

/// Runs `cmd` capturing its output; fails with its stderr when it exits non-zero.
pub fn output(cmd: &mut Command) -> Result<Output> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .with_context(|| format!("could not start {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// Runs `cmd` and returns its trimmed stdout.
pub fn stdout(cmd: &mut Command) -> Result<String> {
    let out = output(cmd)?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Removes what `cargo run` told this process about the xtask package (`CARGO_MANIFEST_DIR`,
/// `CARGO_PKG_*`, ...), so the cargo commands the xtask starts do not inherit it: build
/// scripts that watch those variables (ring's does) would otherwise see them change between
/// `cargo xtask` and plain cargo builds, and rebuild every time.
pub fn forget_cargo_run_env() {
    const EXACT: [&str; 6] = [
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_MANIFEST_LINKS",
    ];
    let names: Vec<std::ffi::OsString> = std::env::vars_os()
        .map(|(name, _)| name)
        .filter(|name| {
            name.to_str()
                .is_some_and(|n| EXACT.contains(&n) || n.starts_with("CARGO_PKG_"))
        })
        .collect();
    for name in names {
        // SAFETY: called first thing in main, before any other thread exists.
        unsafe { std::env::remove_var(name) };
    }
}
