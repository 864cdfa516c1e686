//! A SYN flood that overflows the connection table many times over does not cost established
//! flows their entries: with a small table (1024 entries) and a per-CPU new-flow rate, the
//! flood's flows go untracked, so when the Maglev table changes in the middle of the flood (a
//! backend added), every established TCP connection stays on its backend: those idle during
//! the flood (the kernel's LRU keeps busy entries on its active list anyway, idle ones are
//! what a flood evicts) and long-lived ones carrying data all the while. Without the rate, the
//! flood evicts the idle connections' entries and the new table places them again, moving
//! about a quarter of them (their backend answers the next byte with a reset).

mod l4_e2e_support;

use std::time::Duration;

use l4_e2e_support::restart::Flows;
use l4_e2e_support::{Mode, Setup, TCP_PORT, V4};
use lb_common::stats::Reason;
use sluice_tests::{eventually, privileged, required_tool};

/// New flows each CPU may track per second: above the test's own 22 connections, opened in a
/// burst on one CPU (at 20, the last of them went untracked now and then, and after the table
/// change one of those moved: the reset a CI run saw), and far below the flood's 20,000 a
/// second, whose tracked share (at most 400 in ten seconds) leaves each CPU's half of the
/// 1024-entry table room for the test's entries.
const NEW_FLOWS_PER_CPU: u32 = 40;

/// 100,000 SYNs, one every 50 us: about five seconds of flood.
const FLOOD_SYNS: &str = "100000";

/// The flood's source: an address in the client's network that no host has, as in a spoofed
/// flood. From the client's own address, hping3's source port (counted up through all 65,536)
/// would send a SYN with the very tuple of each of the test's connections, and the client's
/// kernel would answer the backends' SYN-ACKs with resets the test did not mean to send.
const FLOOD_SOURCE: &str = "10.30.0.77";

#[test]
fn established_flows_survive_a_syn_flood_that_overflows_the_table() {
    if !privileged() || !required_tool("hping3", "hping3") {
        return;
    }
    let mut setup = Setup::new(&V4, Mode::Dsr);
    setup.dataplane =
        format!("[dataplane]\nconntrack_entries = 1024\nnew_flows_per_cpu = {NEW_FLOWS_PER_CPU}\n");
    setup.start_afresh();
    let untracked_at_start = setup.xdp_count(Reason::FlowNotTracked);
    let flows = Flows::start(&setup, 4, 2);
    flows.wait_for_progress("before the flood");
    let mut idle: Vec<_> = (0..16)
        .map(|_| setup.client.in_ns(|| setup.tcp_connect()))
        .collect();
    let (new_before, untracked_before) = (
        setup.xdp_count(Reason::FlowNew),
        setup.xdp_count(Reason::FlowNotTracked),
    );
    assert_eq!(
        untracked_before, untracked_at_start,
        "every connection of the test itself is tracked before the flood"
    );
    // What moves a tracked flow, should one move: its entry gone, out of date or timed out.
    let movers = [
        Reason::FlowResteered,
        Reason::FlowExpired,
        Reason::FlowReopened,
        Reason::FlowInsertFailed,
    ];
    let movers_before = movers.map(|r| setup.xdp_count(r));

    // SYNs from the client's network, a new source port each (hping3 counts it up).
    let vip = V4.vip.to_string();
    let port = TCP_PORT.to_string();
    let mut hping = setup.client.command("hping3");
    hping.args(["-q", "-S", "-a", FLOOD_SOURCE, "-p", &port, "-i", "u50"]);
    hping.args(["-c", FLOOD_SYNS, &vip]);
    hping.stdout(std::process::Stdio::null());
    hping.stderr(std::process::Stdio::null());
    let mut flood = setup.client.spawn(hping);
    // Well into the flood (the table overflowed twice), the Maglev table changes.
    eventually(Duration::from_secs(30), || {
        let new = setup.xdp_count(Reason::FlowNew) - new_before;
        if new > 2048 {
            Ok(())
        } else {
            Err(format!("{new} new flows so far"))
        }
    });
    setup.add_backend_and_reload();
    flood.wait_timeout(Duration::from_secs(60));
    let untracked = setup.xdp_count(Reason::FlowNotTracked) - untracked_before;
    assert!(
        untracked > 10 * 1024,
        "the flood went above the rate and was steered untracked: {untracked} flows"
    );
    flows.wait_for_progress("after the flood");
    let mut broken: Vec<String> = idle
        .iter_mut()
        .filter_map(|conn| match conn.ask() {
            Ok(name) if name == conn.served_by => None,
            Ok(name) => Some(format!(
                "idle {} moved from {} to {name}",
                conn.local, conn.served_by
            )),
            Err(e) => Some(format!(
                "idle {} to {} broke: {e}",
                conn.local, conn.served_by
            )),
        })
        .collect();
    let reports = flows.finish();
    broken.extend(reports.iter().filter_map(|r| r.as_ref().err()).cloned());
    let total = reports.len() + idle.len();
    let moved: Vec<String> = movers
        .iter()
        .zip(movers_before)
        .map(|(r, before)| format!("{}: {}", r.name(), setup.xdp_count(*r) - before))
        .collect();
    eprintln!(
        "SYN flood of {FLOOD_SYNS} ({untracked} untracked), Maglev table changed meanwhile: \
         {} of {total} connections kept; {}",
        total - broken.len(),
        moved.join(", "),
    );
    assert!(broken.is_empty(), "connections broke or moved: {broken:#?}");
    setup.stop();
}
