//! An L7 service behind the XDP program: the agent attaches to the load balancer's
//! interface, the VIP is an address of the load balancer, and an HTTP request from another
//! namespace crosses the program (counted as `pass_l7`) to the agent's listener and on to
//! the backend.

mod l7_support;

use std::time::Duration;

use l7_support::client::{H1, get};
use l7_support::{Backend, Mode, forward_all, local, pool, service};
use lb_common::stats::Reason;
use sluice_tests::{
    Netns, SluiceAgent, add_addr, disable_tx_offload, global_counter, privileged, route_add, veth,
    xdp_program,
};

#[test]
fn http_through_the_xdp_program_reaches_the_listener_and_counts_as_pass_l7() {
    if !privileged() {
        return;
    }
    let client = Netns::new("client");
    let lb = Netns::new("lb");
    veth(&client, "eth0", &lb, "eth0");
    add_addr(&client, "eth0", "10.40.0.1/24");
    add_addr(&lb, "eth0", "10.40.0.2/24");
    add_addr(&lb, "lo", "10.40.9.1/32");
    route_add(&client, "10.40.9.1/32", "10.40.0.2");
    // Native XDP on veth drops the "checksum to be filled in" state of locally sent frames.
    disable_tx_offload(&client, "eth0");
    let app = Backend::start(&lb, "app", local(9001), Mode::Echo);
    let vip = "10.40.9.1:80".parse().expect("vip");
    let config = format!(
        "[[interface]]\nname = \"eth0\"\nxdp_mode = \"native\"\n{}{}{}",
        pool("app", &[&app], &[], ""),
        service("web", vip, ""),
        forward_all("app"),
    );
    let mut agent = SluiceAgent::start(&lb, &config);
    let (prog_id, _) = agent.wait_attached(&lb, "eth0", Duration::from_secs(30));
    let before = global_counter(prog_id, Reason::PassL7)
        .expect("counter")
        .packets;
    let reply = client
        .spawn_task(async move {
            let mut c = H1::connect(vip).await?;
            c.send(get("web.test", "/through-xdp")).await
        })
        .join()
        .unwrap_or_else(|e| panic!("request through the VIP: {e}; log:\n{}", agent.log()));
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "app");
    let seen = app.last();
    assert_eq!(seen.path, "/through-xdp");
    assert_eq!(
        seen.header("x-forwarded-for"),
        "10.40.0.1",
        "the real client address"
    );
    let after = global_counter(prog_id, Reason::PassL7)
        .expect("counter")
        .packets;
    assert!(
        after >= before + 3,
        "the connection's packets were passed up as L7: {before} -> {after}"
    );
    let pins = agent.pins();
    let status = agent.stop(Duration::from_secs(30));
    assert!(status.success(), "clean exit: {status}");
    assert!(xdp_program(&lb, "eth0").is_some(), "kept attached at exit");
    let pin_dir = pins.path().display().to_string();
    let (ok, out) = sluice_tests::sluice_cli(&lb, &["detach", "--pin-dir", &pin_dir]);
    assert!(ok, "sluice detach: {out}");
    assert_eq!(
        xdp_program(&lb, "eth0"),
        None,
        "detached by `sluice detach`"
    );
}
