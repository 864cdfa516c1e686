//! The L7 part as Markdown: one table of medians, one of Sluice's ratios against the targets.

use std::fmt::Write as _;

use super::L7Report;
use crate::bench::compare::{Contender, cell, ratio_cell};

/// Target: Sluice's req/s at least this multiple of each other proxy's, p99 no worse.
pub const RPS_TARGET: f64 = 1.2;
/// Target: the gateway's filter chain keeps at least this share of the plain route's req/s.
pub const GATEWAY_TARGET: f64 = 0.9;
/// Target: matching the last of 10,000 prefix routes keeps at least this share of the req/s
/// of a virtual host with one route.
pub const MANY_ROUTES_TARGET: f64 = 0.95;
/// Target: Sluice's idle resident memory at most this many MiB.
pub const IDLE_MEMORY_TARGET_MIB: f64 = 20.0;
/// Target: Sluice's peak resident memory at most this multiple of nginx's.
pub const PEAK_MEMORY_TARGET: f64 = 1.25;

pub fn markdown(report: &L7Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### L7 proxies (proxy on CPU {}, load generator and backend on CPU {}; {} concurrent \
         requests; {} rounds x {} s after {} s of warm-up; medians)\n",
        report.proxy_cpu,
        report.load_cpu,
        report.connections,
        report.rounds,
        report.duration_s,
        report.warmup_s
    );
    let _ = writeln!(
        out,
        "| case | proxy | req/s | p50 ms | p99 ms | peak MiB | errors | non-2xx |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|");
    for case in &report.cases {
        for c in &case.contenders {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                case.name,
                c.contender.name(),
                cell(c.rps, 0),
                cell(c.p50_ms, 2),
                cell(c.p99_ms, 2),
                cell(c.peak_memory_mib, 1),
                c.errors,
                c.non_2xx,
            );
        }
    }
    let others: Vec<Contender> = report
        .cases
        .first()
        .map(|c| c.sluice_versus.iter().map(|v| v.contender).collect())
        .unwrap_or_default();
    if !others.is_empty() {
        let _ = writeln!(
            out,
            "\nSluice against the others (target: req/s >= {RPS_TARGET}x, p99 <= 1.00x; \
             ✓ met, ✗ not met):\n"
        );
        let mut header = String::from("| case |");
        let mut rule = String::from("|---|");
        for other in &others {
            let _ = write!(header, " req/s vs {0} | p99 vs {0} |", other.name());
            rule.push_str("---:|---:|");
        }
        let _ = writeln!(out, "{header} target |\n{rule}---|");
        let (mut met, mut judged) = (0, 0);
        for case in &report.cases {
            let mut line = format!("| {} |", case.name);
            for v in &case.sluice_versus {
                let _ = write!(
                    line,
                    " {} | {} |",
                    ratio_cell(v.rps_ratio, |r| r >= RPS_TARGET),
                    ratio_cell(v.p99_ratio, |r| r <= 1.0)
                );
            }
            let verdicts: Vec<bool> = case
                .sluice_versus
                .iter()
                .filter_map(|v| v.target_met)
                .collect();
            let verdict = if verdicts.is_empty() {
                "-"
            } else {
                judged += 1;
                if verdicts.iter().all(|&m| m) {
                    met += 1;
                    "met"
                } else {
                    "not met"
                }
            };
            let _ = writeln!(out, "{line} {verdict} |");
        }
        let _ = writeln!(out, "\nThe L7 target is met on {met} of {judged} cases.");
    }
    if let Some(ratio) = report.gateway_versus_plain {
        let _ = writeln!(
            out,
            "\nSluice through jwt + rate_limit + request_id: {ratio:.2}x its req/s on the same \
             route without filters (target: at least {GATEWAY_TARGET}x; {}).",
            if ratio >= GATEWAY_TARGET {
                "✓ met"
            } else {
                "✗ not met"
            }
        );
    }
    if let Some(ratio) = report.last_of_many_routes_versus_one {
        let _ = writeln!(
            out,
            "\nSluice matching the last of 10,000 prefix routes: {ratio:.2}x its req/s with one \
             route (target: at least {MANY_ROUTES_TARGET}x; {}).",
            if ratio >= MANY_ROUTES_TARGET {
                "✓ met"
            } else {
                "✗ not met"
            }
        );
    }
    memory(&mut out, report);
    let resumption: Vec<String> = report
        .cases
        .iter()
        .flat_map(|case| &case.contenders)
        .filter_map(|c| Some((c.contender, c.resumes_sessions?)))
        .fold(Vec::new(), |mut seen: Vec<(Contender, bool)>, (c, r)| {
            match seen.iter_mut().find(|(s, _)| *s == c) {
                Some(entry) => entry.1 |= r,
                None => seen.push((c, r)),
            }
            seen
        })
        .into_iter()
        .map(|(c, r)| format!("{} {}", c.name(), if r { "yes" } else { "no" }))
        .collect();
    if !resumption.is_empty() {
        let _ = writeln!(
            out,
            "\nResumes a TLS session offered again (openssl s_client -sess_out, then -sess_in): {}.",
            resumption.join(", ")
        );
    }
    let _ = writeln!(out, "\nLoad generators:\n");
    for case in &report.cases {
        let _ = writeln!(out, "- {}: `{}`", case.name, case.load_generator);
    }
    let _ = writeln!(out, "\nMethod: {}", report.method);
    out
}

/// The memory table: each proxy idle, at 10,000 idle connections and at its peak, and
/// Sluice's against its targets.
fn memory(out: &mut String, report: &L7Report) {
    if report.memory.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\nResident memory, MiB (VmRSS, VmHWM for the peak, summed over each proxy's \
         processes):\n"
    );
    let _ = writeln!(
        out,
        "| proxy | idle | 10,000 idle keep-alive connections | peak under the bench |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|");
    for m in &report.memory {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            m.contender.name(),
            cell(m.idle_mib, 1),
            cell(m.idle_connections_mib, 1),
            cell(m.peak_mib, 1),
        );
    }
    let find = |c: Contender| report.memory.iter().find(|m| m.contender == c);
    let verdict = |met: bool| if met { "✓ met" } else { "✗ not met" };
    if let Some(idle) = find(Contender::Sluice).and_then(|m| m.idle_mib) {
        let _ = writeln!(
            out,
            "\nSluice idle: {idle:.1} MiB (target: at most {IDLE_MEMORY_TARGET_MIB:.0} MiB; {}).",
            verdict(idle <= IDLE_MEMORY_TARGET_MIB)
        );
    }
    let peaks = (
        find(Contender::Sluice).and_then(|m| m.peak_mib),
        find(Contender::Nginx).and_then(|m| m.peak_mib),
    );
    if let (Some(ours), Some(nginx)) = peaks {
        let _ = writeln!(
            out,
            "\nSluice's peak: {ours:.1} MiB against nginx's {nginx:.1} MiB (target: at most \
             {PEAK_MEMORY_TARGET}x; {:.2}x, {}).",
            ours / nginx,
            verdict(ours <= nginx * PEAK_MEMORY_TARGET)
        );
    }
}
