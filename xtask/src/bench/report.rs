//! The bench's Markdown tables, and the reference figures they compare against.

use std::fmt::Write as _;

use serde::Serialize;

use crate::bench::xdp::XdpReport;

/// A figure from another load balancer, measured on this machine the same way.
#[derive(Debug, Serialize)]
pub struct Reference {
    pub system: &'static str,
    pub case: &'static str,
    pub median_ns: u32,
}

/// Katran's XDP program through BPF_PROG_TEST_RUN on this machine.
pub const KATRAN_EMPTY: Reference = katran("empty program", 7);
pub const KATRAN_NO_SERVICE: Reference = katran("non-service packet", 33);
pub const KATRAN_NEW_TCP: Reference = katran("new TCP flow", 214);
pub const KATRAN_TCP: Reference = katran("established TCP", 90);
pub const KATRAN_UDP: Reference = katran("established UDP", 120);

const fn katran(case: &'static str, median_ns: u32) -> Reference {
    Reference {
        system: "katran",
        case,
        median_ns,
    }
}

/// The XDP part as a Markdown table, with a line on how it was measured.
pub fn xdp_markdown(report: &XdpReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### XDP per-packet cost (BPF_PROG_TEST_RUN, CPU {}, {} rounds x {} calls per case)\n",
        report.cpu, report.rounds, report.calls_per_round
    );
    let _ = writeln!(
        out,
        "| case | median ns | net of empty | p90 net | calls | verdict | warm loop ns (net) \
         | Katran ns | ours/Katran | net ours/Katran | warm ours/Katran |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"
    );
    for case in &report.cases {
        let warm = match (case.warm_loop_ns, case.net_warm_loop_ns) {
            (Some(raw), Some(net)) => format!("{raw} ({net})"),
            (Some(raw), None) => raw.to_string(),
            _ => String::new(),
        };
        let (katran, ratio, net, warm_ratio) = match case.katran {
            Some(k) => (
                k.median_ns.to_string(),
                ratio(f64::from(case.raw_ns.median), k.median_ns),
                net_ratio(case.net_median_ns, k.median_ns),
                case.warm_loop_ns
                    .map(|w| ratio(f64::from(w), k.median_ns))
                    .unwrap_or_default(),
            ),
            None => Default::default(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {warm} | {katran} | {ratio} | {net} | {warm_ratio} |",
            case.name,
            case.raw_ns.median,
            case.net_median_ns,
            case.net_p90_ns,
            case.raw_ns.samples,
            case.verdict,
        );
    }
    let _ = writeln!(
        out,
        "\nmedian: the kernel's duration of one call (repeat = 1, a fresh frame each), median \
         over all calls. net: minus this run's empty-program median ({} ns). p90 net: the 90th \
         percentile minus that same median. warm loop: one call with repeat = calls, average \
         per run, median over rounds, only where the output frame takes the same path again; \
         (net) minus the empty program's warm loop. Katran: its program on this machine. \
         ours/Katran: our median over Katran's figure; net: both minus their empty program \
         (Katran's: {} ns); warm: our warm loop over Katran's figure.",
        report.empty_median_ns, KATRAN_EMPTY.median_ns
    );
    out
}

fn ratio(ours: f64, katran_ns: u32) -> String {
    format!("{:.2}", ours / f64::from(katran_ns))
}

/// Our net figure over Katran's net figure, blank where Katran's net is not positive.
fn net_ratio(ours_net: i64, katran_ns: u32) -> String {
    let katran_net = i64::from(katran_ns) - i64::from(KATRAN_EMPTY.median_ns);
    if katran_net <= 0 {
        return String::new();
    }
    format!("{:.2}", ours_net as f64 / katran_net as f64)
}
