//! Sluice's developer tasks: `cargo xtask --help`.
//!
//! The eBPF half needs a nightly-only build mode and a linker that rustup does not ship; these
//! tasks install what is missing (once) and build both halves, so a fresh clone needs nothing
//! installed by hand.

mod bench;
mod demo;
mod ebpf;
mod run;
mod shell;
mod test;
mod workspace;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, run and test Sluice", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the XDP program (lb-ebpf) for bpfel-unknown-none, installing rust-src and
    /// bpf-linker first if they are missing.
    BuildEbpf,
    /// Build the XDP program and the `sluice` agent.
    Build {
        /// Build the agent with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Sluice in a minute: build everything, then (as root, through sudo if needed) run the
    /// agent on config/demo.toml in network namespaces with a client and four backends, and
    /// show live how flows spread, fail over, come back and follow a reload. Leaves nothing
    /// behind, Ctrl-C included.
    Demo(demo::DemoArgs),
    /// Build everything, then run `sluice` as root (through sudo when not root).
    ///
    /// Example: `cargo xtask run -- run --config config/example.toml`
    Run {
        /// Build and run the agent with the release profile.
        #[arg(long)]
        release: bool,
        /// Arguments passed to `sluice`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// The project's test gate: build the XDP program, `cargo fmt --check`,
    /// `cargo clippy --all-targets -D warnings`, then every test.
    ///
    /// Privileged tests (network namespaces, XDP) need root; with `CI` set they fail instead
    /// of skipping.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Measure Sluice (root only): the XDP program's per-packet cost, L4 and L7 against
    /// HAProxy and nginx, and the control plane. Prints Markdown tables and writes the raw
    /// figures to `<target>/bench/<part>.json`.
    ///
    /// Example: `cargo xtask bench --part l7 --duration 3 --rounds 1`
    Bench(bench::BenchArgs),
}

fn main() -> Result<()> {
    shell::forget_cargo_run_env();
    let cli = Cli::parse();
    match cli.command {
        Command::BuildEbpf => ebpf::build().map(|_| ()),
        Command::Build { release } => run::build_all(release).map(|_| ()),
        Command::Demo(args) => demo::run(&args),
        Command::Run { release, args } => run::run(release, &args),
        Command::Test { args } => test::run(&args),
        Command::Bench(args) => bench::run(&args),
    }
}
