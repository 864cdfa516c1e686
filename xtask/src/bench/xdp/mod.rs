//! Per-packet cost of Sluice's XDP program, and Katran's beside it, through
//! BPF_PROG_TEST_RUN.
//!
//! Two methods, both programs, the same frames. Fresh frames: every call runs one frame once
//! (repeat = 1), the figure of a call is the kernel's own `duration`, and the empty program
//! (`sluice_pass`), measured the same way in the same rounds, is the harness's share,
//! subtracted for the net figures. Warm loop: one call with repeat = N through a restoring
//! wrapper (see `warm`), net of the wrapper around its empty body. Every call's verdict and
//! output frame, and every batch's counters, are checked for both programs, so a figure is
//! only reported for the path it claims to measure. Rounds interleave the cases and alternate
//! which program goes first; rounds where the wrapper's empty cost is out of line are left out.

mod batch;
mod cases;
mod dataplane;
mod frames;
mod katran;
mod katran_maps;
mod services;
mod summary;
mod warm;

use std::path::Path;

use anyhow::{Context, Result};
use nix::sched::{CpuSet, sched_setaffinity};
use nix::unistd::Pid;
use sluice_tests::xdp_lab::Lab;

use self::dataplane::{Dataplane, Program};
use self::katran::Katran;
pub use self::katran::objects as katran_objects;
pub use self::summary::XdpReport;
use self::summary::{CaseRound, Round};
use self::warm::Warm;

/// How much to measure, and where.
pub struct Options {
    pub rounds: u32,
    pub calls: u32,
    pub cpu: usize,
    /// Measure only the cases whose name contains this (and the empty program).
    pub filter: Option<String>,
    /// Katran's built objects, or why there are none.
    pub katran: Result<katran::Objects, String>,
}

const METHOD: &str = "BPF_PROG_TEST_RUN. Fresh frames: repeat = 1, one fresh frame per call, \
    kernel-reported duration per call, median over all calls of the kept rounds, net of the \
    empty program's median; new-flow cases send a new 5-tuple every call (the same frames to \
    both programs) and their flows are deleted after each batch. Warm loop: one call with \
    repeat = calls per round through a wrapper that restores the frame after every run, the \
    program under test replacing the wrapper's body as a BPF extension; median over rounds, \
    net of the wrapper around its empty body. Rounds interleave the cases, alternate which \
    program goes first, run on one pinned CPU; round 0 is a discarded warm-up, and rounds \
    where the wrapper's empty cost is out of line are discarded.";

/// Creates the namespace, then measures on a thread inside it pinned to `options.cpu`.
pub fn run(object: &Path, options: &Options) -> Result<XdpReport> {
    let lab = Lab::new("bench");
    lab.ns().in_ns(|| measure(object, lab.eth0(), options))
}

fn measure(object: &Path, eth0: u32, options: &Options) -> Result<XdpReport> {
    pin(options.cpu)?;
    let mut dp = Dataplane::load(object, eth0)?;
    let objects = options.katran.as_ref().ok();
    let mut katran = objects
        .map(|k| Katran::load(&k.plain, options.cpu, katran::PROGRAM))
        .transpose()?;
    let mut warm = match objects.map(|k| &k.wrapped) {
        Some(Ok(wrapped)) => Some(Warm::load(wrapped, eth0, options.cpu)?),
        Some(Err(reason)) => {
            crate::shell::step("Skipping", &format!("Katran's warm loop: {reason}"));
            None
        }
        None => None,
    };
    let mut cases = cases::build(&dp)?;
    if let Some(filter) = &options.filter {
        let filter = filter.to_lowercase();
        cases.retain(|c| c.program == Program::Empty || c.name.to_lowercase().contains(&filter));
    }
    if let Some(k) = katran.as_mut() {
        for case in &cases {
            batch::establish(case, k, eth0, warm.as_mut())?;
        }
    }
    let empty_index = cases
        .iter()
        .position(|c| c.program == Program::Empty)
        .context("no empty-program case")?;
    let baseline = dp.flows()?;
    let mut rounds = Vec::new();
    let warmup = (options.calls / 10).max(1);
    for round in 0..=options.rounds {
        let calls = if round == 0 { warmup } else { options.calls };
        // Alternate which program goes first, so neither always runs on the other's caches.
        let katran_first = round % 2 == 1;
        let mut measured = Round {
            loadavg: crate::bench::environment::loadavg()[0],
            cases: Vec::new(),
        };
        for case in &mut cases {
            let frames = case.frames(calls)?;
            let mut got = CaseRound::default();
            for katran_turn in [katran_first, !katran_first] {
                match (katran_turn, case.katran, katran.as_mut()) {
                    (false, ..) => got.sluice = batch::sluice(&dp, case, &frames, calls)?,
                    (true, Some(route), Some(k)) => {
                        got.katran = Some(batch::katran(k, eth0, case, route, &frames, calls)?);
                    }
                    (true, ..) => {}
                }
            }
            if case.new_flows() {
                dp.forget_flows_except(&baseline)?;
                if let Some(k) = katran.as_mut() {
                    k.forget_new_flows()?;
                }
            }
            if let Some(frame) = case.warm_frame().map(<[u8]>::to_vec) {
                // The empty program's row holds the wrapper's empty cost in Katran's column.
                let wrapped = match (case.program, case.katran) {
                    (Program::Empty, _) => Some(None),
                    (_, Some(route)) => Some(Some(route)),
                    _ => None,
                };
                for katran_turn in [katran_first, !katran_first] {
                    match (katran_turn, wrapped, warm.as_mut()) {
                        (false, ..) => {
                            got.sluice_warm = Some(batch::sluice_warm(&dp, case, &frame, calls)?);
                        }
                        (true, Some(route), Some(w)) => {
                            got.katran_warm =
                                Some(batch::katran_warm(w, case, route, &frame, calls)?);
                        }
                        (true, ..) => {}
                    }
                }
            }
            measured.cases.push(got);
        }
        if round > 0 {
            rounds.push(measured);
        }
    }
    let head = XdpReport {
        method: METHOD,
        cpu: options.cpu,
        rounds: options.rounds,
        calls_per_round: options.calls,
        katran: options
            .katran
            .as_ref()
            .map(|k| k.plain.display().to_string())
            .map_err(Clone::clone),
        loadavg_per_round: Vec::new(),
        empty_warm_per_round_ns: Vec::new(),
        wrapper_warm_per_round_ns: Vec::new(),
        discarded_rounds: Vec::new(),
        empty_median_ns: 0,
        empty_warm_ns: 0,
        wrapper_warm_ns: None,
        cases: Vec::new(),
    };
    Ok(summary::summarise(&cases, rounds, head, empty_index))
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
