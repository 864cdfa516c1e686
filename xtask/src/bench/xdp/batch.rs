//! One round's timing of one case by one program and method, with the checks that make the
//! figure mean what it names: every call's verdict and output frame, and the batch's counters.

use anyhow::{Context, Result, anyhow, bail};
use lb_common::stats::Reason;

use super::cases::{Case, XDP_PASS, XDP_TX, verdict_name};
use super::dataplane::{self, Dataplane, Program};
use super::frames;
use super::katran::{self, Katran, Route};
use super::warm::Warm;

/// Output buffer: the longest frame plus Katran's IPv6 outer header, with room to spare.
const OUT: usize = 512;

/// Sluice, one fresh frame per call: each call's duration.
pub fn sluice(dp: &Dataplane, case: &Case, frames: &[Vec<u8>], calls: u32) -> Result<Vec<u32>> {
    let program = dp.program(case.program)?;
    let mut out = vec![0u8; OUT];
    let mut durations = Vec::with_capacity(calls as usize);
    let before = dp.counts()?;
    for i in 0..calls as usize {
        let frame = &frames[i % frames.len()];
        let run = dp.run(program, frame, &mut out, 1)?;
        verdict(&case.name, i, run.verdict, case.verdict)?;
        frames::check(case.output, frame, &out[..run.len.min(OUT)])
            .map_err(|e| anyhow!("{}: call {i}: {e}", case.name))?;
        durations.push(run.ns);
    }
    let after = dp.counts()?;
    check_counters(case, u64::from(calls), &before, &after)
        .with_context(|| format!("{}: the counters show another path ran", case.name))?;
    Ok(durations)
}

/// Katran, the same frames: each call's duration.
pub fn katran(
    k: &mut Katran,
    ifindex: u32,
    case: &Case,
    route: Route,
    frames: &[Vec<u8>],
    calls: u32,
) -> Result<Vec<u32>> {
    if route == Route::NewFlow {
        k.reset_flood_limit()?;
    }
    let name = format!("{} (Katran)", case.name);
    let program: &aya::programs::Xdp = k
        .ebpf
        .program(katran::PROGRAM)
        .context("Katran's program")?
        .try_into()?;
    let mut out = vec![0u8; OUT];
    let mut durations = Vec::with_capacity(calls as usize);
    let before = k.counts()?;
    for i in 0..calls as usize {
        let frame = &frames[i % frames.len()];
        let run = dataplane::run(program, ifindex, frame, &mut out, 1)?;
        verdict(&name, i, run.verdict, route_verdict(route))?;
        katran::check_output(route, frame, &out[..run.len.min(OUT)])
            .map_err(|e| anyhow!("{name}: call {i}: {e}"))?;
        durations.push(run.ns);
    }
    let after = k.counts()?;
    katran::check_counts(route, u64::from(calls), &before, &after)
        .with_context(|| format!("{name}: the counters show another path ran"))?;
    Ok(durations)
}

/// Sluice by the warm method: `calls` runs in one call on one frame, bare (the case's output
/// takes the same path again); the kernel's average. Checks the verdict, the final output and
/// the counters, as [`sluice`] does.
pub fn sluice_warm(dp: &Dataplane, case: &Case, frame: &[u8], calls: u32) -> Result<u32> {
    let what = format!("{} (warm loop of {calls})", case.name);
    let program = dp.program(case.program)?;
    let mut out = vec![0u8; OUT];
    let before = dp.counts()?;
    let run = dp.run(program, frame, &mut out, calls)?;
    let after = dp.counts()?;
    verdict(&what, 0, run.verdict, case.verdict)?;
    frames::check(case.output, frame, &out[..run.len.min(OUT)])
        .map_err(|e| anyhow!("{what}: {e}"))?;
    check_counters(case, u64::from(calls), &before, &after)
        .with_context(|| format!("{what}: the counters show another path ran"))?;
    Ok(run.ns)
}

/// Katran (`route`), or the empty body (`None`), by the warm method: `calls` runs in one call
/// through the restoring wrapper; the kernel's average. Checks the verdict, that the wrapper
/// gave the frame back, and Katran's counters.
pub fn katran_warm(
    warm: &mut Warm,
    case: &Case,
    route: Option<Route>,
    frame: &[u8],
    calls: u32,
) -> Result<u32> {
    let what = format!("{} (Katran, warm loop of {calls})", case.name);
    let mut out = vec![0u8; OUT];
    let before = warm.katran.counts()?;
    let run = warm.run(route.is_some(), frame, &mut out, calls)?;
    let after = warm.katran.counts()?;
    verdict(&what, 0, run.verdict, route.map_or(XDP_PASS, route_verdict))?;
    if out[..run.len.min(OUT)] != *frame {
        bail!("{what}: the wrapper did not give the frame back as it was");
    }
    match route {
        Some(route) => katran::check_counts(route, u64::from(calls), &before, &after)
            .with_context(|| format!("{what}: the counters show another path ran"))?,
        None if before != after => bail!("{what}: the empty wrapper moved Katran's counters"),
        None => {}
    }
    Ok(run.ns)
}

/// Puts an established case's flow into Katran's tables, fresh and warm, by one untimed
/// packet each, checked to have been forwarded and to have added one flow.
pub fn establish(
    case: &Case,
    katran: &mut Katran,
    ifindex: u32,
    warm: Option<&mut Warm>,
) -> Result<()> {
    let (Some(Route::Established), Some(frame)) = (case.katran, case.warm_frame()) else {
        return Ok(());
    };
    let what = format!("establishing {} (Katran)", case.name);
    let mut out = vec![0u8; OUT];
    let before = katran.counts()?;
    let program: &aya::programs::Xdp = katran
        .ebpf
        .program(katran::PROGRAM)
        .context("Katran's program")?
        .try_into()?;
    let run = dataplane::run(program, ifindex, frame, &mut out, 1)?;
    verdict(&what, 0, run.verdict, XDP_TX)?;
    katran.keep_current_flows()?;
    if katran.counts()?.flows != before.flows + 1 {
        bail!("{what}: no flow was added to Katran's LRU");
    }
    if let Some(warm) = warm {
        let run = warm.run(true, frame, &mut out, 1)?;
        verdict(&format!("{what}, warm"), 0, run.verdict, XDP_TX)?;
        warm.katran.keep_current_flows()?;
    }
    Ok(())
}

fn route_verdict(route: Route) -> u32 {
    match route {
        Route::NoService => XDP_PASS,
        Route::NewFlow | Route::Established => XDP_TX,
    }
}

fn verdict(what: &str, call: usize, got: u32, want: u32) -> Result<()> {
    if got != want {
        bail!(
            "{what}: call {call} returned {}, not {}: the bench is not measuring the path it names",
            verdict_name(got),
            verdict_name(want)
        );
    }
    Ok(())
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
