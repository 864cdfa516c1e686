//! `cargo xtask bench`: measures Sluice and reports each part as a Markdown table on stdout
//! and as JSON under `<target>/bench/`.
//!
//! Each part is a sibling module returning a serialisable report: `xdp`, the XDP program's
//! per-packet cost through BPF_PROG_TEST_RUN. End-to-end L4/L7 comparisons and control-plane
//! timings belong next to it.

mod environment;
mod report;
mod stats;
mod xdp;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use nix::sched::sched_getaffinity;
use nix::unistd::Pid;
use serde::Serialize;

use self::environment::Environment;
use crate::shell::step;
use crate::{ebpf, workspace};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Measured rounds. Each round runs every case once, cases interleaved, so drift over the
    /// run touches them all alike; a short warm-up round comes first and is discarded.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// BPF_PROG_TEST_RUN calls per case and round, each on one fresh frame.
    #[arg(long, default_value_t = 20_000)]
    calls: u32,
    /// The CPU to pin the measuring thread to [default: the last one this process may use].
    #[arg(long)]
    cpu: Option<usize>,
    /// Measure only the cases whose name contains this text (the empty program always runs),
    /// e.g. `--case "IPv6 TCP established"` while profiling one path.
    #[arg(long = "case")]
    filter: Option<String>,
}

/// Runs every part, prints its table and writes its JSON.
pub fn run(args: &BenchArgs) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "the bench needs root (network namespaces, loading XDP programs, BPF_PROG_TEST_RUN): \
             run it as root, e.g. `sudo -E cargo xtask bench`"
        );
    }
    if args.rounds == 0 || args.calls == 0 {
        bail!("--rounds and --calls must be at least 1");
    }
    let object = ebpf::build()?;
    let cpu = pick_cpu(args.cpu)?;

    step(
        "Benchmarking",
        &format!(
            "XDP program through BPF_PROG_TEST_RUN on CPU {cpu}: {} rounds of {} calls per case",
            args.rounds, args.calls
        ),
    );
    let options = xdp::Options {
        rounds: args.rounds,
        calls: args.calls,
        cpu,
        filter: args.filter.clone(),
    };
    let mut environment = Environment::start();
    let xdp = xdp::run(&object, &options)?;
    environment.finish();
    println!("{}", report::xdp_markdown(&xdp));
    if let Some(warning) = environment.warning() {
        println!("{warning}\n");
    }
    let path = write_json("xdp", &environment, &xdp)?;
    step("Finished", &format!("raw figures in {}", path.display()));
    Ok(())
}

/// `wanted`, checked to be a CPU this process may run on, or the last such CPU (CPU 0 takes
/// more of the machine's interrupts and housekeeping on most systems).
fn pick_cpu(wanted: Option<usize>) -> Result<usize> {
    let allowed = sched_getaffinity(Pid::from_raw(0)).context("reading this process's CPUs")?;
    let usable: Vec<usize> = (0..nix::sched::CpuSet::count())
        .filter(|&cpu| allowed.is_set(cpu).unwrap_or(false))
        .collect();
    match wanted {
        Some(cpu) if usable.contains(&cpu) => Ok(cpu),
        Some(cpu) => bail!("--cpu {cpu}: this process may only run on CPUs {usable:?}"),
        None => usable
            .last()
            .copied()
            .context("this process may run on no CPU"),
    }
}

/// A part's report as written: the machine it ran on, then its own fields.
#[derive(Serialize)]
struct Written<'a, T> {
    environment: &'a Environment,
    #[serde(flatten)]
    report: &'a T,
}

/// Writes `<target>/bench/<part>.json` and returns its path.
fn write_json(part: &str, environment: &Environment, report: &impl Serialize) -> Result<PathBuf> {
    let dir = workspace::target_dir().join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{part}.json"));
    let written = Written {
        environment,
        report,
    };
    let json = serde_json::to_string_pretty(&written).context("serialising the report")?;
    std::fs::write(&path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
