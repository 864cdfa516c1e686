//! Sluice's developer tasks: `cargo xtask --help`.
//!
//! The eBPF half needs a nightly-only build mode and a linker that rustup does not ship; these
//! tasks install what is missing (once) and build both halves, so a fresh clone needs nothing
//! installed by hand.

mod bench;
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
    /// Measure the data path (root only): the XDP program's per-packet cost through
    /// BPF_PROG_TEST_RUN, printed as a table and written to `<target>/bench/xdp.json`.
    Bench(bench::BenchArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::BuildEbpf => ebpf::build().map(|_| ()),
        Command::Build { release } => run::build_all(release).map(|_| ()),
        Command::Run { release, args } => run::run(release, &args),
        Command::Test { args } => test::run(&args),
        Command::Bench(args) => bench::run(&args),
    }
}
