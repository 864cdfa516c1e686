//! The bench's Markdown tables, and the reference figures they compare against.

use std::fmt::Write as _;

use crate::bench::xdp::XdpReport;

/// The XDP part as a Markdown table (both programs, both methods), with a note on the method.
pub fn xdp_markdown(report: &XdpReport) -> String {
    let mut out = String::new();
    let kept = report.rounds as usize - report.discarded_rounds.len();
    let _ = writeln!(
        out,
        "### XDP per-packet cost (BPF_PROG_TEST_RUN, CPU {}, {kept} of {} rounds x {} calls \
         per case and program)\n",
        report.cpu, report.rounds, report.calls_per_round
    );
    let _ = writeln!(
        out,
        "| case | verdict | Sluice ns | net | Katran ns | net | net Sluice/Katran \
         | warm Sluice net | warm Katran net | warm Sluice/Katran |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for case in &report.cases {
        let s = &case.sluice;
        let k = case.katran.as_ref();
        // The empty program's row has only the wrapper's warm cost in Katran's column.
        let fresh = k.filter(|k| k.raw_ns.samples > 0);
        let cell = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            case.name,
            case.verdict,
            s.raw_ns.median,
            s.net_median_ns,
            cell(fresh.map(|k| i64::from(k.raw_ns.median))),
            cell(fresh.map(|k| k.net_median_ns)),
            ratio(Some(s.net_median_ns), fresh.map(|k| k.net_median_ns)),
            cell(s.net_warm_ns),
            cell(k.and_then(|k| k.net_warm_ns)),
            ratio(s.net_warm_ns, k.and_then(|k| k.net_warm_ns)),
        );
    }
    let katran = match &report.katran {
        Ok(path) => format!("Katran: {path}."),
        Err(reason) => format!("No Katran column: {reason}."),
    };
    let loads: Vec<String> = report
        .loadavg_per_round
        .iter()
        .map(|l| format!("{l:.1}"))
        .collect();
    let _ = writeln!(
        out,
        "\nns: median of the kernel's duration of one call (repeat = 1, a fresh frame each) \
         over all calls. net: minus this run's empty-program median ({} ns). warm: one call \
         with repeat = calls, the kernel's average, median over rounds; Sluice bare on cases whose \
         output takes the same path again, net of the empty program the same way ({} ns); \
         Katran through a wrapper that restores the frame after every run, net of the wrapper \
         around an empty body ({} ns). Ratios: Sluice's net over Katran's. {katran} Load \
         average per round: {}; rounds discarded (an empty warm cost out of line): {:?}.",
        report.empty_median_ns,
        report.empty_warm_ns,
        report.wrapper_warm_ns.map_or("-".into(), |w| w.to_string()),
        loads.join(", "),
        report.discarded_rounds
    );
    out
}

/// Our net figure over Katran's, blank where either is missing or Katran's is not positive.
fn ratio(ours: Option<i64>, katran: Option<i64>) -> String {
    match (ours, katran) {
        (Some(ours), Some(katran)) if katran > 0 => format!("{:.2}", ours as f64 / katran as f64),
        _ => String::new(),
    }
}
