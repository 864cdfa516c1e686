//! The L4 part as Markdown: medians per contender, then Sluice's ratios against the target.

use std::fmt::Write as _;

use super::L4Report;
use crate::bench::compare::{Contender, cell, ratio_cell};

/// Target: Sluice's connections/s through XDP at least this multiple of HAProxy's (TCP mode).
pub const CPS_TARGET: f64 = 2.0;

pub fn markdown(report: &L4Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### L4 end to end (client -> load balancer -> 2 backends, namespaces on a bridge; {} \
         client threads; {} rounds x {} s after {} s of warm-up; medians)\n",
        report.connections, report.rounds, report.duration_s, report.warmup_s
    );
    let _ = writeln!(
        out,
        "| load balancer | connections/s | p50 ms | p99 ms | Gbit/s ({} streams) | failed connections |",
        report.throughput_streams
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    for c in &report.contenders {
        let name = match c.contender {
            Contender::Sluice => "sluice (XDP, DSR)",
            Contender::Haproxy => "haproxy (TCP mode)",
            Contender::Nginx => "nginx (stream)",
        };
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} |",
            cell(c.connections_per_s, 0),
            cell(c.p50_ms, 2),
            cell(c.p99_ms, 2),
            cell(c.gbit_per_s, 2),
            c.errors
        );
    }
    let others: Vec<Contender> = report
        .contenders
        .iter()
        .map(|c| c.contender)
        .filter(|&c| c != Contender::Sluice)
        .collect();
    if report
        .contenders
        .iter()
        .any(|c| c.contender == Contender::Sluice)
        && !others.is_empty()
    {
        let _ = writeln!(
            out,
            "\nSluice against the others (target: connections/s >= {CPS_TARGET}x HAProxy's; \
             ✓ met, ✗ not met):\n"
        );
        let _ = writeln!(out, "| versus | connections/s | throughput |");
        let _ = writeln!(out, "|---|---:|---:|");
        for &other in &others {
            let (cps, gbit) = report.ratios(other);
            let target = if other == Contender::Haproxy {
                CPS_TARGET
            } else {
                1.0
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                other.name(),
                ratio_cell(cps, |r| r >= target),
                ratio_cell(gbit, |r| r >= 1.0)
            );
        }
    }
    if others.contains(&Contender::Haproxy) {
        let verdict = match report.ratios(Contender::Haproxy).0 {
            Some(r) if r >= CPS_TARGET => "met",
            Some(_) => "not met",
            None => "not measured",
        };
        let _ = writeln!(out, "\nThe L4 target is {verdict}.");
    }
    let _ = writeln!(out, "\nMethod: {}", report.method);
    out
}
