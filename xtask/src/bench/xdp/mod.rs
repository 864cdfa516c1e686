//! Per-packet cost of the XDP program through BPF_PROG_TEST_RUN.
//!
//! Every call runs one fresh frame once (repeat = 1): the kernel does not restore the frame
//! between repeats, so a rewriting program would otherwise see its own output. The figure of a
//! call is the kernel's own `duration`; the empty program (`sluice_pass`), measured the same
//! way in the same run, is the harness's share and is subtracted for the net figures. Cases
//! whose output frame takes the same path again are also timed as one warm in-kernel loop
//! (repeat = N), the way figures for other load balancers are usually taken. Every
//! call's verdict and output frame, and every batch's GLOBAL_STATS counters, are checked, so
//! a figure is only reported for the path it claims to measure.

mod cases;
mod dataplane;
mod frames;
mod lab;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use lb_common::stats::Reason;
use nix::sched::{CpuSet, sched_setaffinity};
use nix::unistd::Pid;
use serde::Serialize;

use self::cases::{Case, verdict_name};
use self::dataplane::{Dataplane, Program};
use self::lab::Lab;
use crate::bench::report::Reference;
use crate::bench::stats::{Summary, histogram};

/// How much to measure, and where.
pub struct Options {
    pub rounds: u32,
    pub calls: u32,
    pub cpu: usize,
    /// Measure only the cases whose name contains this (and the empty program).
    pub filter: Option<String>,
}

/// Everything measured, as written to `xdp.json`.
#[derive(Serialize)]
pub struct XdpReport {
    pub method: &'static str,
    pub cpu: usize,
    pub rounds: u32,
    pub calls_per_round: u32,
    /// The empty program's median, subtracted from every case for its net figures.
    pub empty_median_ns: u32,
    /// The empty program's warm-loop figure, subtracted from the other warm-loop figures.
    pub empty_warm_loop_ns: Option<u32>,
    pub cases: Vec<CaseReport>,
}

#[derive(Serialize)]
pub struct CaseReport {
    pub name: String,
    pub program: &'static str,
    pub verdict: &'static str,
    /// The GLOBAL_STATS reasons every call was counted under, besides `seen`.
    pub counted_as: Vec<&'static str>,
    /// Over all measured calls of all rounds.
    pub raw_ns: Summary,
    pub round_medians_ns: Vec<u32>,
    /// `raw_ns.median` minus the empty program's median.
    pub net_median_ns: i64,
    /// `raw_ns.p90` minus the empty program's median.
    pub net_p90_ns: i64,
    /// Median over rounds of one `repeat = calls` run's average, for loop-safe cases.
    pub warm_loop_ns: Option<u32>,
    pub warm_loop_rounds_ns: Vec<u32>,
    /// `warm_loop_ns` minus the empty program's.
    pub net_warm_loop_ns: Option<i64>,
    pub katran: Option<&'static Reference>,
    /// Calls by duration in ns: the whole distribution.
    pub histogram_ns: BTreeMap<u32, u32>,
}

const METHOD: &str = "BPF_PROG_TEST_RUN, repeat = 1, one fresh frame per call, kernel-reported \
    duration per call; rounds interleave the cases; round 0 is a discarded warm-up; new-flow \
    cases use a new 5-tuple every call and their flows are deleted after each batch; warm loop: \
    one call with repeat = calls per round, for cases whose output takes the same path again";

/// Creates the namespace, then measures on a thread inside it pinned to `options.cpu`.
pub fn run(object: &Path, options: &Options) -> Result<XdpReport> {
    let lab = Lab::new();
    lab.ns.in_ns(|| measure(object, lab.eth0, options))
}

fn measure(object: &Path, eth0: u32, options: &Options) -> Result<XdpReport> {
    pin(options.cpu)?;
    let mut dp = Dataplane::load(object, eth0)?;
    let mut cases = cases::build(&dp)?;
    if let Some(filter) = &options.filter {
        let filter = filter.to_lowercase();
        cases.retain(|c| c.program == Program::Empty || c.name.to_lowercase().contains(&filter));
    }
    let baseline = dp.flows()?;
    let mut samples: Vec<Samples> = cases.iter().map(|_| Samples::default()).collect();
    let warmup = (options.calls / 10).max(1);
    for round in 0..=options.rounds {
        let calls = if round == 0 { warmup } else { options.calls };
        for (case, samples) in cases.iter_mut().zip(&mut samples) {
            let durations = batch(&dp, case, calls)?;
            if case.new_flows() {
                dp.forget_flows_except(&baseline)?;
            }
            let warm = if case.loop_safe {
                Some(warm_loop(&dp, case, calls)?)
            } else {
                None
            };
            if round > 0 {
                samples.calls.push(durations);
                samples.warm_loop.extend(warm);
            }
        }
    }
    let mut reports: Vec<CaseReport> = cases
        .iter()
        .zip(samples)
        .map(|(c, s)| report(c, s))
        .collect();
    let empty = reports
        .iter()
        .find(|r| r.program == Program::Empty.name())
        .ok_or_else(|| anyhow!("no empty-program case"))?;
    let (empty, empty_warm) = (empty.raw_ns.median, empty.warm_loop_ns);
    for r in &mut reports {
        r.net_median_ns = i64::from(r.raw_ns.median) - i64::from(empty);
        r.net_p90_ns = i64::from(r.raw_ns.p90) - i64::from(empty);
        if let (Some(warm), Some(empty_warm)) = (r.warm_loop_ns, empty_warm) {
            r.net_warm_loop_ns = Some(i64::from(warm) - i64::from(empty_warm));
        }
    }
    Ok(XdpReport {
        method: METHOD,
        cpu: options.cpu,
        rounds: options.rounds,
        calls_per_round: options.calls,
        empty_median_ns: empty,
        empty_warm_loop_ns: empty_warm,
        cases: reports,
    })
}

/// One case's figures: per round, every call's duration, and the warm loop's average.
#[derive(Default)]
struct Samples {
    calls: Vec<Vec<u32>>,
    warm_loop: Vec<u32>,
}

/// Runs `calls` calls of one case and returns their durations, or fails naming the first
/// call whose verdict or output, or the batch whose counters, are not the case's path.
fn batch(dp: &Dataplane, case: &mut Case, calls: u32) -> Result<Vec<u32>> {
    let frames = case.frames(calls)?;
    let program = dp.program(case.program)?;
    let mut out = vec![0u8; 512];
    let mut durations = Vec::with_capacity(calls as usize);
    let before = dp.counts()?;
    for i in 0..calls as usize {
        let frame = &frames[i % frames.len()];
        let run = dp.run(program, frame, &mut out, 1)?;
        if run.verdict != case.verdict {
            bail!(
                "{}: call {i} returned {}, not {}: the bench is not measuring the path it names",
                case.name,
                verdict_name(run.verdict),
                verdict_name(case.verdict)
            );
        }
        frames::check(case.output, frame, &out[..run.len.min(out.len())])
            .map_err(|e| anyhow!("{}: call {i}: {e}", case.name))?;
        durations.push(run.ns);
    }
    let after = dp.counts()?;
    check_counters(case, u64::from(calls), &before, &after)
        .with_context(|| format!("{}: the counters show another path ran", case.name))?;
    Ok(durations)
}

/// Runs the case's frame `calls` times in one call (repeat) and returns the kernel's average,
/// after the same checks as [`batch`]: the verdict, the final output, every counter.
fn warm_loop(dp: &Dataplane, case: &mut Case, calls: u32) -> Result<u32> {
    let frames = case.frames(1)?;
    let frame = &frames[0];
    let program = dp.program(case.program)?;
    let mut out = vec![0u8; 512];
    let before = dp.counts()?;
    let run = dp.run(program, frame, &mut out, calls)?;
    let after = dp.counts()?;
    let what = format!("{} (warm loop of {calls})", case.name);
    if run.verdict != case.verdict {
        bail!(
            "{what}: returned {}, not {}",
            verdict_name(run.verdict),
            verdict_name(case.verdict)
        );
    }
    frames::check(case.output, frame, &out[..run.len.min(out.len())])
        .map_err(|e| anyhow!("{what}: {e}"))?;
    check_counters(case, u64::from(calls), &before, &after)
        .with_context(|| format!("{what}: the counters show another path ran"))?;
    Ok(run.ns)
}

/// Each of the case's reasons (and `Seen`, for the data path) moved by exactly `calls`, and
/// no other reason moved at all.
fn check_counters(case: &Case, calls: u64, before: &[u64], after: &[u64]) -> Result<()> {
    let mut wrong = Vec::new();
    for (slot, reason) in Reason::ALL.iter().enumerate() {
        let moved = after[slot].wrapping_sub(before[slot]);
        let expected = match reason {
            Reason::Seen if case.program == Program::Sluice => calls,
            r if case.reasons.contains(r) => calls,
            _ => 0,
        };
        if moved != expected {
            wrong.push(format!("{} +{moved} (want +{expected})", reason.name()));
        }
    }
    if !wrong.is_empty() {
        bail!("over {calls} calls: {}", wrong.join(", "));
    }
    Ok(())
}

fn report(case: &Case, samples: Samples) -> CaseReport {
    let round_medians_ns = samples
        .calls
        .iter()
        .map(|r| Summary::of(&mut r.clone()).median)
        .collect();
    let warm_loop_ns =
        (!samples.warm_loop.is_empty()).then(|| Summary::of(&mut samples.warm_loop.clone()).median);
    let mut all: Vec<u32> = samples.calls.into_iter().flatten().collect();
    CaseReport {
        name: case.name.clone(),
        program: case.program.name(),
        verdict: verdict_name(case.verdict),
        counted_as: case.reasons.iter().map(|r| r.name()).collect(),
        histogram_ns: histogram(&all),
        raw_ns: Summary::of(&mut all),
        round_medians_ns,
        net_median_ns: 0,
        net_p90_ns: 0,
        warm_loop_ns,
        warm_loop_rounds_ns: samples.warm_loop,
        net_warm_loop_ns: None,
        katran: case.katran,
    }
}

/// Pins the calling thread to `cpu`, so per-CPU maps, caches and the LRU's per-CPU free lists
/// are the same for every call.
fn pin(cpu: usize) -> Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)
        .with_context(|| format!("CPU {cpu} is out of range"))?;
    sched_setaffinity(Pid::from_raw(0), &set)
        .with_context(|| format!("pinning the bench thread to CPU {cpu}"))
}
