//! L4 end to end: connections/s and throughput from a client namespace through the load
//! balancer's namespace to two backends, through Sluice's XDP path (DSR), HAProxy in TCP
//! mode and nginx's stream module, on the same topology with the same load generator.
//!
//! HAProxy and nginx run one thread / worker pinned to the proxy CPU. Sluice's forwarding runs
//! in the kernel wherever the packets arrive (on veth: the sending CPU), so nothing else is
//! pinned: client and backends use whatever CPU the proxy leaves them, and a cheaper load
//! balancer shows as more connections per second.

mod client;
mod configs;
mod report;
pub(crate) mod server;
pub(crate) mod topology;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use self::client::{Rate, Throughput};
pub use self::report::markdown;
use self::topology::{RR_PORT, SINK_PORT, Topology, VIP};
use crate::bench::agent::{Agent, Running};
use crate::bench::compare::{Contender, median_of, order, ratio};
use crate::bench::process::{Daemon, wait_listening};
use crate::bench::{interrupt, write};
use crate::shell::step;

pub struct Options {
    pub sluice: PathBuf,
    pub rounds: u32,
    pub duration: Duration,
    pub warmup: Duration,
    /// Client threads of the connections/s load.
    pub connections: u32,
    pub proxy_cpu: usize,
    pub contenders: Vec<Contender>,
}

/// Connections of the throughput load.
const STREAMS: u32 = 4;

const METHOD: &str = "client, load balancer and two backends in their own namespaces on one \
    bridge (veth, MTU 1500, TX checksum offload off on every host); Sluice: XDP native on the \
    load balancer's eth0, DSR (backends answer the client directly); HAProxy: TCP mode, \
    nbthread 1; nginx: stream module, worker_processes 1, proxy_half_close on; both pinned to \
    proxy_cpu, round robin. Load generator (threads in the client namespace, identical for all): \
    connections/s = `connections` threads each looping connect, send 1 byte, read the 1-byte \
    answer and the backend's close, close; latency = connect to close. Throughput = 4 \
    connections sending 64 KiB writes for the duration, then half-closing and reading the \
    backends' byte count; rate = counted bytes / time until the last count. Each round starts \
    each contender afresh, warms it up with the connections/s load, then measures both; rounds \
    interleave the contenders; medians over rounds.";

/// Everything measured, as written to `l4.json`.
#[derive(Serialize)]
pub struct L4Report {
    pub method: &'static str,
    pub proxy_cpu: usize,
    pub rounds: u32,
    pub duration_s: u64,
    pub warmup_s: u64,
    pub connections: u32,
    pub throughput_streams: u32,
    pub contenders: Vec<ContenderReport>,
    /// Sluice's connections/s over HAProxy's: the target is at least [`report::CPS_TARGET`].
    pub sluice_over_haproxy_cps: Option<f64>,
    pub target_met: Option<bool>,
}

#[derive(Serialize)]
pub struct ContenderReport {
    pub contender: Contender,
    /// Medians over rounds.
    pub connections_per_s: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub gbit_per_s: Option<f64>,
    /// Failed connections, summed over rounds.
    pub errors: u64,
    pub runs: Vec<Run>,
}

#[derive(Serialize)]
pub struct Run {
    pub round: u32,
    pub rate: Rate,
    pub throughput: Throughput,
}

impl L4Report {
    /// Sluice's median over `versus`'s: (connections/s, throughput).
    pub fn ratios(&self, versus: Contender) -> (Option<f64>, Option<f64>) {
        let find = |c: Contender| self.contenders.iter().find(|r| r.contender == c);
        match (find(Contender::Sluice), find(versus)) {
            (Some(ours), Some(theirs)) => (
                ratio(ours.connections_per_s, theirs.connections_per_s),
                ratio(ours.gbit_per_s, theirs.gbit_per_s),
            ),
            _ => (None, None),
        }
    }
}

pub fn run(opts: &Options) -> Result<L4Report> {
    let dir = tempfile::Builder::new()
        .prefix("sluice-bench-l4-")
        .tempdir()
        .context("creating a temp folder")?;
    let dir = dir.path();
    write(&dir.join("sluice.toml"), &configs::sluice())?;
    write(&dir.join("haproxy.cfg"), &configs::haproxy())?;
    write(&dir.join("nginx.conf"), &configs::nginx(dir))?;
    step(
        "Preparing",
        "the L4 namespaces (client, load balancer, 2 backends)",
    );
    let topology = Topology::new()?;
    let mut runs: BTreeMap<usize, Vec<Run>> = BTreeMap::new();
    for round in 0..opts.rounds {
        let contenders: Vec<(usize, Contender)> =
            opts.contenders.iter().copied().enumerate().collect();
        for (index, contender) in order(&contenders, round) {
            interrupt::check()?;
            let run = measure(&topology, dir, contender, round, opts)
                .with_context(|| format!("L4, {}, round {round}", contender.name()))?;
            eprintln!(
                "{:>12} round {round}: {:<8} {:>9.0} connections/s  p99 {:.2} ms  {:.2} Gbit/s  \
                 errors {}",
                "",
                contender.name(),
                run.rate.per_second,
                run.rate.p99_ms,
                run.throughput.gbit_per_s,
                run.rate.errors
            );
            runs.entry(index).or_default().push(run);
        }
    }
    let contenders = opts
        .contenders
        .iter()
        .enumerate()
        .map(|(i, &c)| summarise(c, runs.remove(&i).unwrap_or_default()))
        .collect();
    let mut report = L4Report {
        method: METHOD,
        proxy_cpu: opts.proxy_cpu,
        rounds: opts.rounds,
        duration_s: opts.duration.as_secs(),
        warmup_s: opts.warmup.as_secs(),
        connections: opts.connections,
        throughput_streams: STREAMS,
        contenders,
        sluice_over_haproxy_cps: None,
        target_met: None,
    };
    report.sluice_over_haproxy_cps = report.ratios(Contender::Haproxy).0;
    report.target_met = report
        .sluice_over_haproxy_cps
        .map(|r| r >= report::CPS_TARGET);
    Ok(report)
}

fn start(topology: &Topology, dir: &Path, contender: Contender, opts: &Options) -> Result<Running> {
    let cpu = Some(opts.proxy_cpu);
    let log = dir.join(format!("{}.log", contender.name()));
    let rr: SocketAddr = format!("{VIP}:{RR_PORT}").parse()?;
    let mut running = match contender {
        Contender::Sluice => {
            let agent = Agent::start(
                &opts.sluice,
                &topology.lb,
                cpu,
                &dir.join("sluice.toml"),
                &log,
            )?;
            Running::Sluice(agent)
        }
        Contender::Haproxy => {
            let mut cmd = topology.lb.command_on_cpu(cpu, "haproxy");
            cmd.arg("-db").arg("-f").arg(dir.join("haproxy.cfg"));
            Running::Other(Daemon::spawn("haproxy", cmd, &log)?)
        }
        Contender::Nginx => {
            let mut cmd = topology.lb.command_on_cpu(cpu, "nginx");
            cmd.arg("-e")
                .arg(dir.join("nginx-error.log"))
                .arg("-c")
                .arg(dir.join("nginx.conf"));
            Running::Other(Daemon::spawn("nginx", cmd, &log)?)
        }
    };
    let daemon = running.daemon();
    // From the client, through the whole path: the first flows may wait for neighbours.
    wait_listening(&topology.client, rr, daemon, Duration::from_secs(20))?;
    Ok(running)
}

fn measure(
    topology: &Topology,
    dir: &Path,
    contender: Contender,
    round: u32,
    opts: &Options,
) -> Result<Run> {
    let running = start(topology, dir, contender, opts)?;
    let rr: SocketAddr = format!("{VIP}:{RR_PORT}").parse()?;
    let sink: SocketAddr = format!("{VIP}:{SINK_PORT}").parse()?;
    if !opts.warmup.is_zero() {
        client::connection_rate(&topology.client, rr, opts.connections, opts.warmup)
            .context("warming up")?;
    }
    let rate = client::connection_rate(&topology.client, rr, opts.connections, opts.duration)?;
    // Let the last connections' closing packets settle.
    interrupt::sleep(Duration::from_millis(500))?;
    let throughput = client::throughput(&topology.client, sink, STREAMS, opts.duration)
        .context("measuring throughput")?;
    drop(running);
    Ok(Run {
        round,
        rate,
        throughput,
    })
}

fn summarise(contender: Contender, runs: Vec<Run>) -> ContenderReport {
    ContenderReport {
        contender,
        connections_per_s: median_of(&runs, |r| Some(r.rate.per_second)),
        p50_ms: median_of(&runs, |r| Some(r.rate.p50_ms)),
        p99_ms: median_of(&runs, |r| Some(r.rate.p99_ms)),
        gbit_per_s: median_of(&runs, |r| Some(r.throughput.gbit_per_s)),
        errors: runs.iter().map(|r| r.rate.errors).sum(),
        runs,
    }
}
