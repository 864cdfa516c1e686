//! L7 proxies compared: Sluice, nginx and HAProxy forwarding the same route to the same
//! backend, on the loopback of one namespace. The proxy is pinned to one CPU, the load
//! generator and the backend to another, so each proxy has exactly one core.
//!
//! Every (case, round, contender) run starts the proxy afresh, so its peak memory belongs to
//! that case alone, warms it up, measures, reads its VmHWM and stops it.

mod cases;
mod configs;
mod idle;
mod load;
mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;
use sluice_tests::Netns;

use self::cases::{Case, generate};
pub use self::load::Load;
pub use self::report::markdown;
use crate::bench::agent::{Agent, Running};
use crate::bench::compare::{Contender, median, median_of, order, ratio};
use crate::bench::process::{Daemon, wait_listening};
use crate::bench::{interrupt, write};
use crate::shell::step;

/// How much to measure, and where.
pub struct Options {
    pub sluice: PathBuf,
    pub rounds: u32,
    pub duration: Duration,
    pub warmup: Duration,
    pub connections: u32,
    pub proxy_cpu: usize,
    pub load_cpu: usize,
    pub contenders: Vec<Contender>,
    /// Only the cases whose name contains this.
    pub filter: Option<String>,
}

/// Everything measured, as written to `l7.json`.
#[derive(Serialize)]
pub struct L7Report {
    /// Sluice's req/s through the gateway's filter chain over the same route without it.
    pub gateway_versus_plain: Option<f64>,
    /// Sluice's req/s matching the last of 10,000 prefix routes over matching the one route
    /// of the plain keep-alive case.
    pub last_of_many_routes_versus_one: Option<f64>,
    pub method: &'static str,
    pub proxy_cpu: usize,
    pub load_cpu: usize,
    pub rounds: u32,
    pub duration_s: u64,
    pub warmup_s: u64,
    pub connections: u32,
    /// Each proxy's memory: idle, at 10,000 idle connections, at its peak.
    pub memory: Vec<MemoryReport>,
    pub cases: Vec<CaseReport>,
}

/// One proxy's resident memory over the part (MiB, VmRSS/VmHWM summed over its processes).
#[derive(Serialize)]
pub struct MemoryReport {
    pub contender: Contender,
    /// Just started, before any connection: the median over every run of the cases all
    /// contenders ran.
    pub idle_mib: Option<f64>,
    /// With [`idle::MANY_CONNECTIONS`] keep-alive connections open and idle, each answered
    /// once (median over rounds).
    pub idle_connections_mib: Option<f64>,
    /// The highest of the per-case peaks (medians over rounds) over the cases all contenders
    /// ran.
    pub peak_mib: Option<f64>,
}

#[derive(Serialize)]
pub struct CaseReport {
    pub name: &'static str,
    /// The load generator's command line, the same for every contender.
    pub load_generator: String,
    pub contenders: Vec<ContenderReport>,
    /// Sluice's medians over each other contender's, against the target.
    pub sluice_versus: Vec<Versus>,
}

/// Sluice against one other proxy on one case.
#[derive(Serialize)]
pub struct Versus {
    pub contender: Contender,
    pub rps_ratio: Option<f64>,
    pub p99_ratio: Option<f64>,
    /// req/s at least [`report::RPS_TARGET`] times theirs and p99 no worse (when known).
    pub target_met: Option<bool>,
}

#[derive(Serialize)]
pub struct ContenderReport {
    pub contender: Contender,
    /// Medians over rounds.
    pub rps: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub peak_memory_mib: Option<f64>,
    /// Resident memory just after start, before any load.
    pub idle_memory_mib: Option<f64>,
    /// The many-connections case: resident memory with that many idle connections open.
    pub idle_connections_memory_mib: Option<f64>,
    /// Summed over rounds.
    pub errors: u64,
    pub non_2xx: u64,
    /// TLS cases: whether any run saw the proxy resume a session.
    pub resumes_sessions: Option<bool>,
    pub runs: Vec<Run>,
}

#[derive(Serialize)]
pub struct Run {
    pub round: u32,
    #[serde(flatten)]
    pub load: Load,
    /// VmHWM summed over the proxy's processes (nginx: master and worker).
    pub peak_memory_kib: u64,
    /// VmRSS summed over them once the proxy listens, before any connection.
    pub idle_memory_kib: u64,
    /// The many-connections case: VmRSS summed over them with its idle connections open,
    /// before the load.
    pub idle_connections_memory_kib: Option<u64>,
    /// Threads of the proxy's main process (Sluice: its runtime follows the CPU affinity).
    pub threads: usize,
    /// TLS cases: whether the proxy resumed a session offered again (openssl s_client).
    pub resumes_sessions: Option<bool>,
}

impl CaseReport {
    /// Sluice's medians over `versus`'s: (req/s ratio, p99 ratio).
    pub fn ratios(&self, versus: Contender) -> (Option<f64>, Option<f64>) {
        let find = |c: Contender| self.contenders.iter().find(|r| r.contender == c);
        match (find(Contender::Sluice), find(versus)) {
            (Some(ours), Some(theirs)) => (
                ratio(ours.rps, theirs.rps),
                ratio(ours.p99_ms, theirs.p99_ms),
            ),
            _ => (None, None),
        }
    }
}

const METHOD: &str = "one namespace, loopback; the proxy pinned to proxy_cpu (Sluice's tokio \
    runtime sizes itself from the affinity: one worker; nginx: worker_processes 1; HAProxy: \
    nbthread 1), load generator and backend (nginx, one worker, fixed 23-byte body) pinned to \
    load_cpu; every proxy forwards to one keep-alive pool of that backend and sets \
    X-Forwarded-For/-Proto/-Host; access logs on, as each ships (Sluice: its default text \
    line to a file ([log] access_log_file); nginx: the combined format to a file; HAProxy: \
    httplog to stdout, written to a file), except in the 'access log off' case, where each \
    turns its own off for that port (Sluice: access_log = false; nginx: access_log off; \
    HAProxy: no log); each run starts the proxy afresh, warms it \
    up with the same load, then measures; each round runs every case, and within a case \
    every contender (order rotated each round); medians over rounds; Sluice's ratios between \
    its own cases (filter chain, 10,000 routes) are medians of per-round ratios. h2c: p50/p99 from h2load's per-request log. TLS: RSA-2048 \
    self-signed (the server's signature is the costly step of a full handshake; with ECDSA the \
    client's verification would be), TLS 1.2 and 1.3 offered; wrk offers to resume its session \
    and the check after each run says whether the proxy did (all three do by default: session \
    cache or tickets), so that case is mostly abbreviated handshakes; openssl s_time -new makes \
    a full handshake per connection (one request each, concurrency / 4 loops side by side, rate \
    = connections / wall time, no latency figures). The 10,000-connection case: the keep-alive \
    route with wrk holding 10,000 connections (every open-files soft limit raised to the hard \
    limit; nginx: worker_connections 19000; HAProxy: maxconn 10500; Sluice: the pool's \
    circuit breakers admit 20,000 requests in flight); before its load, 10,000 connections \
    each send one request, read the answer and stay open and idle while the proxy's memory is \
    read. Memory: VmRSS (idle: 1 s after the proxy listens, before any connection; with the \
    idle connections: 1 s after the last opened) and VmHWM (peak), summed over the proxy's \
    processes; the memory table's idle and peak figures are over the cases every proxy ran.";

/// Between a proxy listening (or its idle connections opening) and reading its memory.
const SETTLE: Duration = Duration::from_secs(1);
/// Between closing the idle connections and the load of the same case.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Runs every case, and returns the report.
pub fn run(opts: &Options) -> Result<L7Report> {
    let dir = tempfile::Builder::new()
        .prefix("sluice-bench-l7-")
        .tempdir()
        .context("creating a temp folder")?;
    let dir = dir.path();
    let cert = configs::certificate(dir)?;
    write(&dir.join("backend.conf"), &configs::backend(dir))?;
    write(&dir.join("sluice.toml"), &configs::sluice(&cert))?;
    write(
        &dir.join("sluice-routes.toml"),
        &configs::sluice_many_routes(),
    )?;
    write(&dir.join("nginx.conf"), &configs::nginx(dir, &cert))?;
    write(&dir.join("haproxy.cfg"), &configs::haproxy(&cert))?;
    let bearer = gateway_token(dir)?;

    let cases = cases_selected(opts);
    if cases.contains(&Case::ManyConnections) {
        idle::raise_open_files_limit()?;
    }
    let ns = Netns::new("l7");
    let mut backend = start_backend(&ns, dir, opts.load_cpu)?;
    // Rounds outermost: each round runs every case, so the ratios between cases (the filter
    // chain's, the route table's) compare runs minutes apart at most, not a whole part apart.
    let mut runs: BTreeMap<(usize, usize), Vec<Run>> = BTreeMap::new();
    for round in 0..opts.rounds {
        for (case_index, &case) in cases.iter().enumerate() {
            step(
                "Measuring",
                &format!("L7 round {}/{}: {}", round + 1, opts.rounds, case.name()),
            );
            for (index, contender) in order(&indexed(&opts.contenders), round) {
                if case.sluice_only() && contender != Contender::Sluice {
                    continue;
                }
                interrupt::check()?;
                backend.check_running()?;
                let run = measure(&ns, dir, contender, case, round, opts, &bearer).with_context(
                    || format!("L7 {}, {}, round {round}", case.name(), contender.name()),
                )?;
                eprintln!(
                    "{:>12} round {round}: {:<8} {:>10.0} req/s  p99 {} ms  peak {:.1} MiB  \
                     errors {}",
                    "",
                    contender.name(),
                    run.load.rps,
                    run.load.p99_ms.map_or("-".into(), |p| format!("{p:.2}")),
                    run.peak_memory_kib as f64 / 1024.0,
                    run.load.errors + run.load.non_2xx,
                );
                runs.entry((case_index, index)).or_default().push(run);
            }
        }
    }
    let mut reports = Vec::new();
    for (case_index, &case) in cases.iter().enumerate() {
        let contenders = opts
            .contenders
            .iter()
            .enumerate()
            .filter(|(_, c)| !case.sluice_only() || **c == Contender::Sluice)
            .map(|(i, &c)| summarise(c, runs.remove(&(case_index, i)).unwrap_or_default()))
            .collect();
        let load_generator = case
            .invocation(
                opts,
                opts.duration,
                &dir.join("h2load.log"),
                "<ES256 token>",
            )
            .to_string();
        let mut report = CaseReport {
            name: case.name(),
            load_generator,
            contenders,
            sluice_versus: Vec::new(),
        };
        report.sluice_versus = versus(&report);
        reports.push(report);
    }
    // Killed if it lingers past the grace period; every figure is taken by now.
    let _ = backend.stop(Duration::from_secs(3));
    let gateway_versus_plain = sluice_ratio(&reports, Case::Gateway, Case::KeepAlive);
    let last_of_many_routes_versus_one = sluice_ratio(&reports, Case::RoutesLast, Case::KeepAlive);
    Ok(L7Report {
        gateway_versus_plain,
        last_of_many_routes_versus_one,
        method: METHOD,
        proxy_cpu: opts.proxy_cpu,
        load_cpu: opts.load_cpu,
        rounds: opts.rounds,
        duration_s: opts.duration.as_secs(),
        warmup_s: opts.warmup.as_secs(),
        connections: opts.connections,
        memory: memory(&reports, &opts.contenders),
        cases: reports,
    })
}

/// The cases `--case` selects, in order.
fn cases_selected(opts: &Options) -> Vec<Case> {
    Case::ALL
        .into_iter()
        .filter(|c| {
            opts.filter
                .as_ref()
                .is_none_or(|f| c.name().to_lowercase().contains(&f.to_lowercase()))
        })
        .collect()
}

/// Each contender's memory over the cases every contender ran (the Sluice-only cases have
/// configs of their own, such as 10,000 routes, that no other proxy carries).
fn memory(reports: &[CaseReport], contenders: &[Contender]) -> Vec<MemoryReport> {
    let shared: Vec<&CaseReport> = reports
        .iter()
        .filter(|r| {
            Case::ALL
                .iter()
                .any(|c| c.name() == r.name && !c.sluice_only())
        })
        .collect();
    contenders
        .iter()
        .map(|&contender| {
            let of = || {
                shared
                    .iter()
                    .flat_map(|r| &r.contenders)
                    .filter(move |c| c.contender == contender)
            };
            let idle: Vec<f64> = of()
                .flat_map(|c| &c.runs)
                .map(|r| r.idle_memory_kib as f64 / 1024.0)
                .collect();
            MemoryReport {
                contender,
                idle_mib: median(&idle),
                idle_connections_mib: of().find_map(|c| c.idle_connections_memory_mib),
                peak_mib: of().filter_map(|c| c.peak_memory_mib).reduce(f64::max),
            }
        })
        .collect()
}

/// The median over rounds of Sluice's req/s in `case` over its req/s in `base` in the same
/// round, if both were measured.
fn sluice_ratio(reports: &[CaseReport], case: Case, base: Case) -> Option<f64> {
    let runs = |case: Case| {
        reports
            .iter()
            .find(|r| r.name == case.name())?
            .contenders
            .iter()
            .find(|c| c.contender == Contender::Sluice)
            .map(|c| &c.runs)
    };
    let (ours, base) = (runs(case)?, runs(base)?);
    let ratios: Vec<f64> = ours
        .iter()
        .filter_map(|run| {
            let same_round = base.iter().find(|b| b.round == run.round)?;
            (same_round.load.rps > 0.0).then(|| run.load.rps / same_round.load.rps)
        })
        .collect();
    median(&ratios)
}

/// A key set beside the config for the gateway case, and a token it verifies (valid for a
/// day, longer than any run).
fn gateway_token(dir: &Path) -> Result<String> {
    use sluice_tests::tokens;
    let signer = tokens::ec("bench", false);
    write(&dir.join(configs::JWKS_FILE), &tokens::jwks(&[&signer]))?;
    let claims = serde_json::json!({"sub": "bench-user", "exp": tokens::now() + 86_400});
    Ok(tokens::token(&signer, tokens::Algorithm::ES256, &claims))
}

fn indexed(contenders: &[Contender]) -> Vec<(usize, Contender)> {
    contenders.iter().copied().enumerate().collect()
}

fn start_backend(ns: &Netns, dir: &Path, cpu: usize) -> Result<Daemon> {
    let mut cmd = ns.command_on_cpu(Some(cpu), "nginx");
    cmd.arg("-e")
        .arg(dir.join("backend-error.log"))
        .arg("-c")
        .arg(dir.join("backend.conf"));
    let mut daemon = Daemon::spawn("the backend (nginx)", cmd, &dir.join("backend.log"))?;
    let addr = format!("{}:{}", configs::HOST, configs::BACKEND_PORT);
    wait_listening(ns, addr.parse()?, &mut daemon, Duration::from_secs(10))?;
    Ok(daemon)
}

fn start(
    contender: Contender,
    case: Case,
    ns: &Netns,
    dir: &Path,
    opts: &Options,
) -> Result<Running> {
    let cpu = Some(opts.proxy_cpu);
    let log = dir.join(format!("{}.log", contender.name()));
    let sluice_config = match case {
        Case::RoutesFirst | Case::RoutesLast => "sluice-routes.toml",
        _ => "sluice.toml",
    };
    Ok(match contender {
        Contender::Sluice => Running::Sluice(Agent::start(
            &opts.sluice,
            ns,
            cpu,
            &dir.join(sluice_config),
            &log,
        )?),
        Contender::Nginx => {
            let mut cmd = ns.command_on_cpu(cpu, "nginx");
            cmd.arg("-e")
                .arg(dir.join("nginx-error.log"))
                .arg("-c")
                .arg(dir.join("nginx.conf"));
            Running::Other(Daemon::spawn("nginx", cmd, &log)?)
        }
        Contender::Haproxy => {
            let mut cmd = ns.command_on_cpu(cpu, "haproxy");
            cmd.arg("-db").arg("-f").arg(dir.join("haproxy.cfg"));
            Running::Other(Daemon::spawn("haproxy", cmd, &log)?)
        }
    })
}

/// One run: start the proxy, warm it up, measure, read its memory, stop it.
fn measure(
    ns: &Netns,
    dir: &Path,
    contender: Contender,
    case: Case,
    round: u32,
    opts: &Options,
    bearer: &str,
) -> Result<Run> {
    let mut proxy = start(contender, case, ns, dir, opts)?;
    let addr = format!("{}:{}", configs::HOST, case.port()).parse()?;
    wait_listening(ns, addr, proxy.daemon(), Duration::from_secs(30))?;
    // What a proxy allocates as it starts settles within moments of its listening.
    interrupt::sleep(SETTLE)?;
    let idle_memory_kib = proxy.daemon().resident_memory_kib()?;
    let idle_connections_memory_kib = if case == Case::ManyConnections {
        let idle =
            idle::open(ns, addr, idle::MANY_CONNECTIONS).context("opening the idle connections")?;
        interrupt::sleep(SETTLE)?;
        let kib = proxy.daemon().resident_memory_kib()?;
        eprintln!(
            "{:>12} {} idle connections: {:.1} MiB (idle before them: {:.1} MiB)",
            "",
            idle.len(),
            kib as f64 / 1024.0,
            idle_memory_kib as f64 / 1024.0
        );
        drop(idle);
        // The proxy closes its ends before the load opens as many again: both at once would
        // pass the descriptor limit.
        interrupt::sleep(CLOSE_GRACE)?;
        Some(kib)
    } else {
        None
    };
    if !opts.warmup.is_zero() {
        generate(ns, dir, case, opts, opts.warmup, bearer).context("warming up")?;
    }
    let load = generate(ns, dir, case, opts, opts.duration, bearer)?;
    let resumes_sessions = if matches!(case, Case::Tls | Case::TlsFull) {
        let addr = format!("{}:{}", configs::HOST, case.port());
        Some(load::resumes_sessions(ns, opts.load_cpu, &addr, dir)?)
    } else {
        None
    };
    let daemon = proxy.daemon();
    daemon.check_running()?;
    let peak_memory_kib = daemon.peak_memory_kib()?;
    let threads = daemon.threads();
    // Killed if it lingers past the grace period; the figures of this run are taken.
    let _ = daemon.stop(Duration::from_secs(8));
    if load.requests == 0 {
        anyhow::bail!(
            "no request completed; the end of the proxy's log:\n{}",
            daemon.log_tail()
        );
    }
    Ok(Run {
        round,
        load,
        peak_memory_kib,
        idle_memory_kib,
        idle_connections_memory_kib,
        threads,
        resumes_sessions,
    })
}

/// Sluice's ratios against every other contender of a case.
fn versus(case: &CaseReport) -> Vec<Versus> {
    let has_sluice = case
        .contenders
        .iter()
        .any(|c| c.contender == Contender::Sluice);
    case.contenders
        .iter()
        .map(|c| c.contender)
        .filter(|&c| has_sluice && c != Contender::Sluice)
        .map(|contender| {
            let (rps_ratio, p99_ratio) = case.ratios(contender);
            let target_met =
                rps_ratio.map(|r| r >= report::RPS_TARGET && p99_ratio.is_none_or(|p| p <= 1.0));
            Versus {
                contender,
                rps_ratio,
                p99_ratio,
                target_met,
            }
        })
        .collect()
}

/// Medians over a contender's runs.
fn summarise(contender: Contender, runs: Vec<Run>) -> ContenderReport {
    ContenderReport {
        contender,
        rps: median_of(&runs, |r| Some(r.load.rps)),
        p50_ms: median_of(&runs, |r| r.load.p50_ms),
        p99_ms: median_of(&runs, |r| r.load.p99_ms),
        peak_memory_mib: median_of(&runs, |r| Some(r.peak_memory_kib as f64 / 1024.0)),
        idle_memory_mib: median_of(&runs, |r| Some(r.idle_memory_kib as f64 / 1024.0)),
        idle_connections_memory_mib: median_of(&runs, |r| {
            r.idle_connections_memory_kib.map(|k| k as f64 / 1024.0)
        }),
        errors: runs.iter().map(|r| r.load.errors).sum(),
        non_2xx: runs.iter().map(|r| r.load.non_2xx).sum(),
        resumes_sessions: runs
            .iter()
            .filter_map(|r| r.resumes_sessions)
            .reduce(|a, b| a || b),
        runs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(round: u32, idle_kib: u64, connections_kib: Option<u64>, peak_kib: u64) -> Run {
        Run {
            round,
            load: Load::default(),
            peak_memory_kib: peak_kib,
            idle_memory_kib: idle_kib,
            idle_connections_memory_kib: connections_kib,
            threads: 1,
            resumes_sessions: None,
        }
    }

    fn case(case: Case, contenders: Vec<ContenderReport>) -> CaseReport {
        CaseReport {
            name: case.name(),
            load_generator: String::new(),
            contenders,
            sluice_versus: Vec::new(),
        }
    }

    #[test]
    fn memory_is_taken_over_the_cases_every_proxy_ran() {
        let reports = [
            case(
                Case::KeepAlive,
                vec![
                    summarise(Contender::Sluice, vec![run(0, 14 * 1024, None, 30 * 1024)]),
                    summarise(Contender::Nginx, vec![run(0, 20 * 1024, None, 25 * 1024)]),
                ],
            ),
            case(
                Case::ManyConnections,
                vec![
                    summarise(
                        Contender::Sluice,
                        vec![
                            run(0, 16 * 1024, Some(280 * 1024), 300 * 1024),
                            run(1, 18 * 1024, Some(290 * 1024), 310 * 1024),
                        ],
                    ),
                    summarise(
                        Contender::Nginx,
                        vec![run(0, 20 * 1024, Some(29 * 1024), 100 * 1024)],
                    ),
                ],
            ),
            // Sluice's own config of 10,000 routes counts for neither idle nor peak.
            case(
                Case::RoutesLast,
                vec![summarise(
                    Contender::Sluice,
                    vec![run(0, 40 * 1024, None, 900 * 1024)],
                )],
            ),
        ];
        let memory = memory(&reports, &[Contender::Sluice, Contender::Nginx]);
        let sluice = &memory[0];
        assert_eq!(sluice.contender, Contender::Sluice);
        assert_eq!(sluice.idle_mib, Some(16.0), "median of 14, 16, 18");
        assert_eq!(sluice.idle_connections_mib, Some(285.0));
        assert_eq!(sluice.peak_mib, Some(305.0), "the higher case median");
        let nginx = &memory[1];
        assert_eq!(
            (nginx.idle_mib, nginx.idle_connections_mib, nginx.peak_mib),
            (Some(20.0), Some(29.0), Some(100.0))
        );
    }
}
