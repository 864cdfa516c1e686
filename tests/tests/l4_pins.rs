//! What the pinned data path leaves on a host: `sluice detach` removes the program, every
//! pin and the managed neighbour entries; an agent built for another map schema refuses to
//! start and leaves the running data path alone.

mod l4_e2e_support;

use std::time::Duration;

use l4_e2e_support::restart::Stop;
use l4_e2e_support::{Mode, Setup, V4};
use sluice_tests::{SluiceAgent, privileged, sluice_cli, xdp_program};

/// Lines of `ip neigh show` in the load balancer that are managed entries.
fn managed_neighbours(setup: &Setup) -> Vec<String> {
    setup
        .lb()
        .ip(["neigh", "show"])
        .lines()
        .filter(|line| line.split_whitespace().any(|word| word == "managed"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn detach_leaves_no_program_pin_or_neighbour_entry() {
    if !privileged() {
        return;
    }
    let mut setup = Setup::new(&V4, Mode::Dsr);
    setup.client.in_ns(|| setup.wait_for_first_tcp_flow());
    let pins = setup.stop_agent(Stop::Term);
    assert!(
        !pins.pinned().is_empty(),
        "the agent pinned its maps and link"
    );
    assert!(
        !managed_neighbours(&setup).is_empty(),
        "the stopped agent left its managed neighbour entries for the running program"
    );
    // The data path still forwards with no agent.
    setup.client.in_ns(|| setup.tcp_connect());

    let pin_dir = pins.path().display().to_string();
    let (ok, out) = sluice_cli(setup.lb(), &["detach", "--pin-dir", &pin_dir]);
    assert!(ok, "sluice detach: {out}");
    assert_eq!(xdp_program(setup.lb(), "eth0"), None, "no program left");
    assert_eq!(
        pins.pinned(),
        Vec::<std::path::PathBuf>::new(),
        "no pin left"
    );
    assert!(!pins.path().exists(), "the pin directory is gone");
    assert_eq!(
        managed_neighbours(&setup),
        Vec::<String>::new(),
        "no managed neighbour entry left"
    );
    // Detaching again finds nothing and says so without failing.
    let (ok, out) = sluice_cli(setup.lb(), &["detach", "--pin-dir", &pin_dir]);
    assert!(ok && out.contains("from 0 interface(s)"), "{out}");
}

#[test]
fn an_agent_of_another_schema_leaves_the_running_data_path_alone() {
    if !privileged() {
        return;
    }
    let mut setup = Setup::new(&V4, Mode::Nat);
    setup.client.in_ns(|| setup.wait_for_first_tcp_flow());
    let running = xdp_program(setup.lb(), "eth0");
    let pins = setup.stop_agent(Stop::Term);
    // As if the running data path had been made by a build with schema v0.
    let ours = pins
        .path()
        .join(format!("v{}", lb_common::schema::SCHEMA_VERSION));
    std::fs::rename(&ours, pins.path().join("v0"))
        .unwrap_or_else(|e| panic!("renaming {}: {e}", ours.display()));

    let agent = SluiceAgent::start_in(
        setup.lb(),
        &setup.config_text(),
        std::sync::Arc::clone(&pins),
        &[],
        &[],
    );
    let (status, log) = agent.wait_with_log(Duration::from_secs(30));
    assert!(!status.success(), "the agent refused to start; log:\n{log}");
    assert!(
        log.contains("a data path of map schema v0 runs") && log.contains("on eth0"),
        "and said why; log:\n{log}"
    );
    assert_eq!(
        xdp_program(setup.lb(), "eth0"),
        running,
        "the running program stays"
    );
    let conn = setup.client.in_ns(|| setup.tcp_connect());
    assert!(!conn.served_by.is_empty(), "and keeps forwarding new flows");

    let pin_dir = pins.path().display().to_string();
    let (ok, out) = sluice_cli(setup.lb(), &["detach", "--pin-dir", &pin_dir]);
    assert!(ok, "sluice detach: {out}");
    assert_eq!(xdp_program(setup.lb(), "eth0"), None);
    assert!(pins.pinned().is_empty(), "{:?}", pins.pinned());
}
