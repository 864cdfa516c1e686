//! The agent loads the real XDP program, attaches it to the configured interface, and the
//! program counts real traffic: read back from the kernel's map, not from the agent.

use std::net::UdpSocket;
use std::time::Duration;

use lb_common::stats::Reason;
use sluice_tests::{
    Netns, SluiceAgent, XdpAttachMode, add_addr, eventually, global_counter, privileged, veth,
    xdp_program,
};

const DATAGRAMS: u64 = 50;

#[test]
fn agent_attaches_xdp_and_counts_packets_keeps_it_on_sigterm_and_detach_removes_it() {
    if !privileged() {
        return;
    }
    let client = Netns::new("client");
    let lb = Netns::new("lb");
    veth(&client, "eth0", &lb, "eth0");
    add_addr(&client, "eth0", "10.200.0.1/24");
    add_addr(&lb, "eth0", "10.200.0.2/24");

    let mut agent = SluiceAgent::start(
        &lb,
        r#"
[[interface]]
name = "eth0"
xdp_mode = "native"
"#,
    );
    let (prog_id, mode) = agent.wait_attached(&lb, "eth0", Duration::from_secs(20));
    assert_eq!(mode, XdpAttachMode::Native, "veth supports native XDP");
    assert!(
        agent.log().contains("attached the XDP program"),
        "log:\n{}",
        agent.log()
    );

    let before = global_counter(prog_id, Reason::Seen).unwrap_or_else(|e| panic!("{e}"));
    client.in_ns(|| {
        let socket = UdpSocket::bind("10.200.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        for i in 0..DATAGRAMS {
            socket
                .send_to(&i.to_be_bytes(), "10.200.0.2:9999")
                .unwrap_or_else(|e| panic!("send: {e}"));
        }
    });
    // Each datagram crosses lb/eth0 once; ARP and ICMP replies may add a few more.
    let after = eventually(Duration::from_secs(5), || {
        let now = global_counter(prog_id, Reason::Seen)?;
        if now.packets >= before.packets + DATAGRAMS {
            Ok(now)
        } else {
            Err(format!(
                "counted {} packets since start, want at least {DATAGRAMS}",
                now.packets - before.packets
            ))
        }
    });
    assert!(
        after.bytes > before.bytes + DATAGRAMS * 42,
        "bytes counted too"
    );

    let pins = agent.pins();
    let status = agent.stop(Duration::from_secs(10));
    assert!(status.success(), "sluice exited with {status}");
    assert!(
        xdp_program(&lb, "eth0").is_some(),
        "SIGTERM must leave the program attached"
    );
    let pin_dir = pins.path().display().to_string();
    let (ok, out) = sluice_tests::sluice_cli(&lb, &["detach", "--pin-dir", &pin_dir]);
    assert!(ok, "sluice detach: {out}");
    assert_eq!(
        xdp_program(&lb, "eth0"),
        None,
        "`sluice detach` must detach the program"
    );
    assert!(pins.pinned().is_empty(), "no pin left: {:?}", pins.pinned());
}

#[test]
fn agent_refuses_to_start_on_a_missing_interface() {
    if !privileged() {
        return;
    }
    let lb = Netns::new("lb");
    let agent = SluiceAgent::start(
        &lb,
        r#"
[[interface]]
name = "nosuch0"
"#,
    );
    let log = eventually(Duration::from_secs(20), || {
        if agent.log().contains("nosuch0") && agent.log().contains("does not exist") {
            Ok(agent.log())
        } else {
            Err(format!("no clear error yet; log:\n{}", agent.log()))
        }
    });
    let status = agent.wait(Duration::from_secs(10));
    assert!(!status.success(), "must exit non-zero; log:\n{log}");
}
