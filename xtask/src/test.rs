//! `cargo xtask test`: the one gate, the same locally and in CI.

use std::process::Command;

use anyhow::Result;

use crate::shell::{self, step};
use crate::{ebpf, workspace};

pub fn run(extra: &[String]) -> Result<()> {
    ebpf::build()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let cargo = || {
        let mut c = Command::new(&cargo);
        c.current_dir(workspace::root());
        c
    };

    step("Checking", "formatting (cargo fmt --check)");
    shell::run(
        cargo().args(["fmt", "--all", "--", "--check"]),
        "run `cargo fmt --all` and commit the result",
    )?;
    step(
        "Checking",
        "lints (cargo clippy --all-targets -- -D warnings)",
    );
    shell::run(
        cargo().args([
            "clippy",
            "--workspace",
            "--exclude",
            "lb-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
        "fix the clippy findings above",
    )?;
    step(
        "Testing",
        "the workspace (privileged tests need root; with CI set they never skip)",
    );
    shell::run(
        cargo()
            .args(["test", "--workspace", "--exclude", "lb-ebpf"])
            .args(extra),
        "tests failed; the output above says which",
    )?;
    Ok(())
}
