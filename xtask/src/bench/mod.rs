//! `cargo xtask bench`: measures Sluice and reports each part as a Markdown table on stdout
//! and as JSON under `<target>/bench/<part>.json`, with the machine it ran on.
//!
//! Parts, each a sibling module returning a serialisable report:
//! - `xdp`: the XDP program's per-packet cost through BPF_PROG_TEST_RUN, beside Katran's when
//!   `--katran` names it;
//! - `l4`: connections/s and throughput through Sluice's XDP path, HAProxy (TCP mode) and
//!   nginx (stream), client, load balancer and backends in their own namespaces;
//! - `l7`: Sluice, nginx and HAProxy as HTTP proxies, each on one core;
//! - `control`: Maglev build times and disruption, a reload of 10,000 backends, and the time
//!   from a backend's death to its removal from the kernel's table.
//!
//! Comparisons run every contender once per round, rounds interleaved, and report medians.

mod agent;
mod compare;
mod control;
mod environment;
mod interrupt;
mod l4;
mod l7;
mod process;
mod report;
mod stats;
mod tools;
mod xdp;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::sched::sched_getaffinity;
use nix::unistd::Pid;
use serde::Serialize;

use self::compare::Contender;
use self::environment::Environment;
use crate::shell::step;
use crate::{ebpf, run as build, workspace};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    Xdp,
    L4,
    L7,
    #[value(alias = "control")]
    ControlPlane,
}

impl Part {
    const ALL: [Part; 4] = [Part::Xdp, Part::L4, Part::L7, Part::ControlPlane];

    /// The JSON file's name.
    fn name(self) -> &'static str {
        match self {
            Part::Xdp => "xdp",
            Part::L4 => "l4",
            Part::L7 => "l7",
            Part::ControlPlane => "control-plane",
        }
    }
}

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Parts to run, comma-separated or repeated [default: all].
    #[arg(long = "part", value_enum, value_delimiter = ',')]
    parts: Vec<Part>,
    /// Measured rounds [default: 5 for xdp, 3 for the others]. Each round runs every case (xdp)
    /// or contender (l4, l7) once, interleaved, so drift over the run touches them all alike;
    /// control-plane repeats each measurement (a reload round slower than 20 s is not).
    #[arg(long)]
    rounds: Option<u32>,
    /// xdp: BPF_PROG_TEST_RUN calls per case and round, each on one fresh frame.
    #[arg(long, default_value_t = 20_000)]
    calls: u32,
    /// The CPU of the measured side: the xdp thread, the l4 and l7 proxies [default: the last
    /// one this process may use].
    #[arg(long)]
    cpu: Option<usize>,
    /// l7: the CPU of the load generator and the backend [default: another usable CPU].
    #[arg(long)]
    load_cpu: Option<usize>,
    /// Measure only the cases whose name contains this text: xdp cases (the empty program
    /// always runs) and l7 cases, e.g. `--case "IPv6 TCP established"` or `--case keep-alive`.
    #[arg(long = "case")]
    filter: Option<String>,
    /// l4, l7: seconds each contender is measured per round and case.
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// l4, l7: seconds of the same load before each measurement, not counted.
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// l4, l7: concurrent connections (HTTP/2: streams) of the load generator.
    #[arg(long, default_value_t = 64)]
    connections: u32,
    /// l4, l7: the contenders, comma-separated [default: sluice,nginx,haproxy].
    #[arg(long = "contender", value_enum, value_delimiter = ',')]
    contenders: Vec<Contender>,
    /// l4, l7, control-plane: bench this `sluice` binary instead of building one in release
    /// (e.g. to compare two builds).
    #[arg(long, value_name = "PATH")]
    sluice: Option<PathBuf>,
    /// xdp: bench this XDP object (`lb-ebpf`) instead of building one
    /// (e.g. to time a saved build beside the current one).
    #[arg(long, value_name = "PATH")]
    ebpf: Option<PathBuf>,
    /// xdp: measure Katran beside Sluice: a Katran source tree (the folder holding
    /// `katran/lib/bpf/`, built here with clang-14 and llc-14) or a built `balancer.bpf.o`
    /// [default: $SLUICE_BENCH_KATRAN; neither: no Katran column].
    #[arg(long, value_name = "PATH")]
    katran: Option<PathBuf>,
}

/// Runs the chosen parts in turn, printing each one's table and writing its JSON. A failed
/// part is reported and the others still run; the exit status says whether all succeeded.
pub fn run(args: &BenchArgs) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "the bench needs root (network namespaces, loading XDP programs, BPF_PROG_TEST_RUN): \
             run it as root, e.g. `sudo -E cargo xtask bench`"
        );
    }
    if args.rounds == Some(0) || args.calls == 0 || args.duration == 0 || args.connections == 0 {
        bail!("--rounds, --calls, --duration and --connections must be at least 1");
    }
    interrupt::install()?;
    let parts = if args.parts.is_empty() {
        Part::ALL.to_vec()
    } else {
        args.parts.clone()
    };
    let (cpu, load_cpu) = pick_cpus(args.cpu, args.load_cpu)?;
    let object = match &args.ebpf {
        Some(path) if path.is_file() => path.clone(),
        Some(path) => bail!("--ebpf {}: no such file", path.display()),
        None => ebpf::build()?,
    };
    let sluice = match &args.sluice {
        Some(path) if path.is_file() => Some(path.clone()),
        Some(path) => bail!("--sluice {}: no such file", path.display()),
        None if parts.iter().any(|p| *p != Part::Xdp) => Some(build::build_all(true)?),
        None => None,
    };
    let mut needs = Vec::new();
    if parts.contains(&Part::L7) {
        needs.extend([
            tools::NGINX,
            tools::HAPROXY,
            tools::WRK,
            tools::H2LOAD,
            tools::OPENSSL,
        ]);
    }
    if parts.contains(&Part::L4) {
        needs.extend([
            tools::NGINX,
            tools::NGINX_STREAM,
            tools::HAPROXY,
            tools::ETHTOOL,
        ]);
    }
    if parts.iter().any(|p| matches!(p, Part::L4 | Part::L7)) {
        needs.push(tools::TASKSET);
    }
    if parts.contains(&Part::ControlPlane) {
        // The removal measurement's topology turns TX checksum offload off.
        needs.push(tools::ETHTOOL);
    }
    tools::ensure(&needs)?;

    let inputs = Inputs {
        args,
        object,
        sluice: sluice.unwrap_or_default(),
        cpu,
        load_cpu,
    };
    let mut failed = Vec::new();
    for part in parts {
        interrupt::check()?;
        if let Err(err) = run_part(part, &inputs) {
            interrupt::check()?;
            eprintln!("error: the {} part failed: {err:#}\n", part.name());
            failed.push(part.name());
        }
    }
    if !failed.is_empty() {
        bail!("these parts failed: {}", failed.join(", "));
    }
    Ok(())
}

/// What every part may need.
struct Inputs<'a> {
    args: &'a BenchArgs,
    object: PathBuf,
    sluice: PathBuf,
    cpu: usize,
    load_cpu: usize,
}

impl Inputs<'_> {
    fn rounds(&self, default: u32) -> u32 {
        self.args.rounds.unwrap_or(default)
    }

    fn contenders(&self) -> Vec<Contender> {
        if self.args.contenders.is_empty() {
            Contender::ALL.to_vec()
        } else {
            self.args.contenders.clone()
        }
    }
}

/// Stops the part's environment sampling; returns the report as Markdown and where its JSON
/// went.
fn finish<R: Serialize>(
    part: Part,
    environment: &mut Environment,
    report: &R,
    markdown: fn(&R) -> String,
) -> Result<(String, PathBuf)> {
    environment.finish();
    Ok((markdown(report), write_json(part, environment, report)?))
}

fn run_part(part: Part, cx: &Inputs<'_>) -> Result<()> {
    let mut environment = Environment::start();
    let (markdown, path) = match part {
        Part::Xdp => {
            let katran = xdp::katran_objects(cx.args.katran.as_deref())?;
            let options = xdp::Options {
                rounds: cx.rounds(5),
                calls: cx.args.calls,
                cpu: cx.cpu,
                filter: cx.args.filter.clone(),
                katran,
            };
            step(
                "Benchmarking",
                &format!(
                    "XDP program through BPF_PROG_TEST_RUN on CPU {}: {} rounds of {} calls \
                     per case",
                    cx.cpu, options.rounds, options.calls
                ),
            );
            let report = xdp::run(&cx.object, &options)?;
            finish(part, &mut environment, &report, report::xdp_markdown)?
        }
        Part::L7 => {
            let options = l7::Options {
                sluice: cx.sluice.clone(),
                rounds: cx.rounds(3),
                duration: Duration::from_secs(cx.args.duration),
                warmup: Duration::from_secs(cx.args.warmup),
                connections: cx.args.connections,
                proxy_cpu: cx.cpu,
                load_cpu: cx.load_cpu,
                contenders: cx.contenders(),
                filter: cx.args.filter.clone(),
            };
            step(
                "Benchmarking",
                &format!(
                    "L7 proxies: {} on CPU {}, load on CPU {}, {} rounds of {} s per case",
                    names(&options.contenders),
                    cx.cpu,
                    cx.load_cpu,
                    options.rounds,
                    cx.args.duration
                ),
            );
            let report = l7::run(&options)?;
            finish(part, &mut environment, &report, l7::markdown)?
        }
        Part::L4 => {
            let options = l4::Options {
                sluice: cx.sluice.clone(),
                rounds: cx.rounds(3),
                duration: Duration::from_secs(cx.args.duration),
                warmup: Duration::from_secs(cx.args.warmup),
                connections: cx.args.connections,
                proxy_cpu: cx.cpu,
                contenders: cx.contenders(),
            };
            step(
                "Benchmarking",
                &format!(
                    "L4 end to end: {}, {} rounds of {} s per measure",
                    names(&options.contenders),
                    options.rounds,
                    cx.args.duration
                ),
            );
            let report = l4::run(&options)?;
            finish(part, &mut environment, &report, l4::markdown)?
        }
        Part::ControlPlane => {
            let options = control::Options {
                sluice: cx.sluice.clone(),
                rounds: cx.rounds(3),
            };
            step("Benchmarking", "the control plane");
            let report = control::run(&options)?;
            finish(part, &mut environment, &report, control::markdown)?
        }
    };
    println!("{markdown}");
    // The xdp part keeps one CPU busy; the others keep every CPU busy.
    let own_load = if part == Part::Xdp {
        1.0
    } else {
        environment.cpus as f64
    };
    if let Some(warning) = environment.warning(own_load) {
        println!("{warning}\n");
    }
    step("Finished", &format!("raw figures in {}", path.display()));
    Ok(())
}

fn names(contenders: &[Contender]) -> String {
    contenders
        .iter()
        .map(|c| c.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The measured side's CPU (`wanted`, checked to be one this process may run on, or the last
/// such CPU: CPU 0 takes more of the machine's interrupts and housekeeping on most systems),
/// and the load generator's (`load`, or the first other usable CPU; the same one on a
/// single-CPU machine).
fn pick_cpus(wanted: Option<usize>, load: Option<usize>) -> Result<(usize, usize)> {
    let allowed = sched_getaffinity(Pid::from_raw(0)).context("reading this process's CPUs")?;
    let usable: Vec<usize> = (0..nix::sched::CpuSet::count())
        .filter(|&cpu| allowed.is_set(cpu).unwrap_or(false))
        .collect();
    let check = |cpu: usize, flag: &str| {
        if usable.contains(&cpu) {
            Ok(cpu)
        } else {
            bail!("{flag} {cpu}: this process may only run on CPUs {usable:?}")
        }
    };
    let cpu = match wanted {
        Some(cpu) => check(cpu, "--cpu")?,
        None => usable
            .last()
            .copied()
            .context("this process may run on no CPU")?,
    };
    let load = match load {
        Some(l) => check(l, "--load-cpu")?,
        None => usable.iter().copied().find(|&c| c != cpu).unwrap_or(cpu),
    };
    Ok((cpu, load))
}

/// Writes a file the bench needs (a config, a certificate).
fn write(path: &std::path::Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// A part's report as written: the machine it ran on, then its own fields.
#[derive(Serialize)]
struct Written<'a, T> {
    environment: &'a Environment,
    #[serde(flatten)]
    report: &'a T,
}

/// Writes `<target>/bench/<part>.json` and returns its path.
fn write_json(part: Part, environment: &Environment, report: &impl Serialize) -> Result<PathBuf> {
    let dir = workspace::target_dir().join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{}.json", part.name()));
    let written = Written {
        environment,
        report,
    };
    let json = serde_json::to_string_pretty(&written).context("serialising the report")?;
    std::fs::write(&path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
