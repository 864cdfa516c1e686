//! From the rounds' samples to the report: which rounds count, then each program's figures per
//! case, net of the empty program (fresh frames) or of the wrapper's own cost (warm loop).

use std::collections::BTreeMap;

use serde::Serialize;

use super::cases::{Case, verdict_name};
use super::dataplane::Program;
use crate::bench::stats::{Summary, histogram};

/// What one round measured of one case.
#[derive(Default)]
pub struct CaseRound {
    pub sluice: Vec<u32>,
    pub sluice_warm: Option<u32>,
    pub katran: Option<Vec<u32>>,
    pub katran_warm: Option<u32>,
}

/// One measured round.
pub struct Round {
    /// The 1-minute load average when the round began.
    pub loadavg: f64,
    /// In case order.
    pub cases: Vec<CaseRound>,
}

/// Everything measured, as written to `xdp.json`.
#[derive(Serialize)]
pub struct XdpReport {
    pub method: &'static str,
    pub cpu: usize,
    pub rounds: u32,
    pub calls_per_round: u32,
    /// The Katran object measured, or why there is no Katran column.
    pub katran: Result<String, String>,
    pub loadavg_per_round: Vec<f64>,
    /// The empty program's warm cost, per round.
    pub empty_warm_per_round_ns: Vec<u32>,
    /// The restoring wrapper's warm cost around its empty body, per round (with Katran).
    pub wrapper_warm_per_round_ns: Vec<u32>,
    /// Rounds (from 1) left out because either empty warm cost was out of line.
    pub discarded_rounds: Vec<usize>,
    /// The empty program's median over every kept call: the fresh method's harness cost.
    pub empty_median_ns: u32,
    /// The empty program's median warm cost: Sluice's warm harness cost.
    pub empty_warm_ns: u32,
    /// The wrapper's median warm cost around its empty body: Katran's warm harness cost.
    pub wrapper_warm_ns: Option<u32>,
    pub cases: Vec<CaseReport>,
}

#[derive(Serialize)]
pub struct CaseReport {
    pub name: String,
    pub verdict: &'static str,
    /// The GLOBAL_STATS reasons every Sluice call was counted under, besides `seen`.
    pub counted_as: Vec<&'static str>,
    pub sluice: Figures,
    pub katran: Option<Figures>,
}

/// One program's figures for one case, over the kept rounds.
#[derive(Serialize)]
pub struct Figures {
    pub program: &'static str,
    pub raw_ns: Summary,
    pub round_medians_ns: Vec<u32>,
    /// `raw_ns.median` minus the empty program's median.
    pub net_median_ns: i64,
    /// `raw_ns.p90` minus the empty program's median.
    pub net_p90_ns: i64,
    /// Median over rounds of the warm loop's average per run.
    pub warm_ns: Option<u32>,
    pub warm_rounds_ns: Vec<u32>,
    /// `warm_ns` minus the wrapper's own.
    pub net_warm_ns: Option<i64>,
    /// Calls by duration in ns: the whole distribution.
    pub histogram_ns: BTreeMap<u32, u32>,
}

/// A round is out of line when the wrapper's empty cost is this far from the median over
/// rounds: a fifth of it, plus the kernel timer's 2 ns of grain.
fn out_of_line(value: u32, median: u32) -> bool {
    value.abs_diff(median) > median / 5 + 2
}

/// Builds the report from the rounds (`empty_index` is the empty program's case).
pub fn summarise(
    cases: &[Case],
    rounds: Vec<Round>,
    head: XdpReport,
    empty_index: usize,
) -> XdpReport {
    let series = |f: fn(&CaseRound) -> Option<u32>| -> Vec<u32> {
        rounds
            .iter()
            .filter_map(|r| f(&r.cases[empty_index]))
            .collect()
    };
    let empty_warm = series(|c| c.sluice_warm);
    let wrapper_warm = series(|c| c.katran_warm);
    let in_line = |values: &[u32], i: usize| {
        let median = Summary::of(&mut values.to_vec()).median;
        values.get(i).is_none_or(|&v| !out_of_line(v, median))
    };
    let discarded: Vec<usize> = (0..rounds.len())
        .filter(|&i| !in_line(&empty_warm, i) || !in_line(&wrapper_warm, i))
        .collect();
    let kept: Vec<&Round> = rounds
        .iter()
        .enumerate()
        .filter(|(i, _)| !discarded.contains(i))
        .map(|(_, r)| r)
        .collect();
    let mut reports: Vec<CaseReport> = cases
        .iter()
        .enumerate()
        .map(|(i, case)| {
            let sluice = figures(
                case.program.name(),
                kept.iter()
                    .map(|r| (r.cases[i].sluice.as_slice(), r.cases[i].sluice_warm)),
            );
            let katran_ran = kept
                .iter()
                .any(|r| r.cases[i].katran.is_some() || r.cases[i].katran_warm.is_some());
            let katran = katran_ran.then(|| {
                figures(
                    super::katran::PROGRAM,
                    kept.iter().map(|r| {
                        let c = &r.cases[i];
                        (c.katran.as_deref().unwrap_or_default(), c.katran_warm)
                    }),
                )
            });
            CaseReport {
                name: case.name.clone(),
                verdict: verdict_name(case.verdict),
                counted_as: case.reasons.iter().map(|r| r.name()).collect(),
                sluice,
                katran,
            }
        })
        .collect();
    let empty = reports[empty_index].sluice.raw_ns.median;
    let empty_warm_ns = reports[empty_index].sluice.warm_ns.unwrap_or(0);
    let wrapper = reports[empty_index].katran.as_ref().and_then(|k| k.warm_ns);
    for report in &mut reports {
        let programs = [
            (Some(&mut report.sluice), Some(empty_warm_ns)),
            (report.katran.as_mut(), wrapper),
        ];
        for (f, harness) in programs {
            let Some(f) = f else { continue };
            if f.raw_ns.samples > 0 {
                f.net_median_ns = i64::from(f.raw_ns.median) - i64::from(empty);
                f.net_p90_ns = i64::from(f.raw_ns.p90) - i64::from(empty);
            }
            f.net_warm_ns = f
                .warm_ns
                .zip(harness)
                .map(|(w, h)| i64::from(w) - i64::from(h));
        }
    }
    debug_assert!(cases[empty_index].program == Program::Empty);
    XdpReport {
        loadavg_per_round: rounds.iter().map(|r| r.loadavg).collect(),
        empty_warm_per_round_ns: empty_warm,
        wrapper_warm_per_round_ns: wrapper_warm,
        discarded_rounds: discarded.iter().map(|i| i + 1).collect(),
        empty_median_ns: empty,
        empty_warm_ns,
        wrapper_warm_ns: wrapper,
        cases: reports,
        ..head
    }
}

fn figures<'a>(
    program: &'static str,
    rounds: impl Iterator<Item = (&'a [u32], Option<u32>)>,
) -> Figures {
    let mut all = Vec::new();
    let mut round_medians_ns = Vec::new();
    let mut warm_rounds_ns = Vec::new();
    for (calls, warm) in rounds {
        if !calls.is_empty() {
            round_medians_ns.push(Summary::of(&mut calls.to_vec()).median);
        }
        all.extend_from_slice(calls);
        warm_rounds_ns.extend(warm);
    }
    let warm_ns =
        (!warm_rounds_ns.is_empty()).then(|| Summary::of(&mut warm_rounds_ns.clone()).median);
    Figures {
        program,
        histogram_ns: histogram(&all),
        raw_ns: Summary::of(&mut all),
        round_medians_ns,
        net_median_ns: 0,
        net_p90_ns: 0,
        warm_ns,
        warm_rounds_ns,
        net_warm_ns: None,
    }
}
