//! Several Sluice nodes behind one router: BIRD on each node announces the VIP that the
//! agent puts in its `[announce]` table, the router spreads flows over the nodes by ECMP
//! (layer-4 hash), and every node places every flow by the same Maglev table, so a flow
//! that moves between nodes keeps its backend. The topology is `sluice_tests::scale_out`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sluice_tests::scale_out::{Flow, HOLD_TIME, ScaleOut};
use sluice_tests::{eventually, privileged, required_tool};

/// Flows of the spread test.
const FLOWS: usize = 10_000;
/// Long-lived flows held across a node's death or drain.
const LONG_LIVED: usize = 60;
/// Bytes each long-lived flow sends (and must get back) per exchange.
const CHUNK: usize = 1024;

fn ready() -> bool {
    privileged() && required_tool("bird", "bird2") && required_tool("birdc", "bird2")
}

/// Prints a measured figure where `cargo test -- --nocapture` and CI logs show it.
fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "scale_out: {line}");
}

/// Opens `n` flows from the client, each checked against the model.
fn open_flows(site: &ScaleOut, n: usize) -> Vec<Flow> {
    let model = site.model();
    site.client.in_ns(|| {
        (0..n)
            .map(|_| {
                let flow = Flow::open().unwrap_or_else(|e| panic!("opening a flow: {e}"));
                assert_eq!(
                    flow.served_by,
                    model.predict(flow.local),
                    "flow {}",
                    flow.local
                );
                flow
            })
            .collect()
    })
}

#[test]
fn ten_thousand_flows_spread_over_three_nodes_each_on_the_model_backend() {
    if !ready() {
        return;
    }
    let site = ScaleOut::new(3, 3);
    let model = site.model();
    let before: Vec<u64> = (0..3).map(|i| site.new_flows(i)).collect();
    // Four client threads; each flow is connected, named by its backend, and closed.
    let (hits, tuples): (BTreeMap<String, usize>, BTreeSet<SocketAddr>) = site.client.in_ns(|| {
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        let mut hits: BTreeMap<String, usize> = BTreeMap::new();
                        let mut locals = BTreeSet::new();
                        for _ in 0..FLOWS / 4 {
                            let flow =
                                Flow::open().unwrap_or_else(|e| panic!("opening a flow: {e}"));
                            assert_eq!(
                                flow.served_by,
                                model.predict(flow.local),
                                "flow {} landed off the model",
                                flow.local
                            );
                            locals.insert(flow.local);
                            *hits.entry(flow.served_by).or_default() += 1;
                        }
                        (hits, locals)
                    })
                })
                .collect();
            let mut all = BTreeMap::new();
            let mut tuples = BTreeSet::new();
            for worker in workers {
                let (hits, locals) = worker
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p));
                for (backend, n) in hits {
                    *all.entry(backend).or_default() += n;
                }
                tuples.extend(locals);
            }
            (all, tuples)
        })
    });
    assert_eq!(hits.values().sum::<usize>(), FLOWS);
    assert_eq!(hits.len(), 3, "every backend got flows: {hits:?}");
    let carried: Vec<u64> = (0..3).map(|i| site.new_flows(i) - before[i]).collect();
    report(&format!(
        "{FLOWS} flows, per node {carried:?}, per backend {hits:?}"
    ));
    // A client port the kernel hands out again (its first connection's TIME_WAIT ended or
    // was never kept) gives the same 4-tuple: that connection rides the first one's
    // connection-table entry to the same backend, unless the entry was closed or evicted and
    // it is placed afresh. So every 4-tuple is placed at least once, every connection at most.
    let placed = carried.iter().sum::<u64>();
    assert!(
        (tuples.len() as u64..=FLOWS as u64).contains(&placed),
        "{placed} flows placed for {} distinct 4-tuples in {FLOWS} connections",
        tuples.len()
    );
    assert!(
        tuples.len() > FLOWS * 9 / 10,
        "the client reused ports for {} of {FLOWS} connections",
        FLOWS - tuples.len()
    );
    for (i, n) in carried.iter().enumerate() {
        assert!(
            *n as usize > FLOWS / 3 / 2,
            "node {i} carried {n} of {FLOWS}: the router's ECMP does not spread ({carried:?})"
        );
    }
}

#[test]
fn a_killed_node_is_withdrawn_by_bfd_and_its_flows_go_on_through_the_others() {
    if !ready() {
        return;
    }
    let mut site = ScaleOut::new(3, 3);
    let victim = 0;
    let mut flows = open_flows(&site, LONG_LIVED);
    for flow in &mut flows {
        flow.exchange(CHUNK)
            .unwrap_or_else(|e| panic!("flow {} before the failure: {e}", flow.local));
    }
    // Long-lived flows the victim carries (it placed each one when it saw its SYN).
    let on_victim = site.new_flows(victim);
    assert!(
        on_victim > 0,
        "the victim carries none of {LONG_LIVED} flows"
    );
    let survivors_before: u64 = (1..3).map(|i| site.new_flows(i)).sum();

    // Traffic keeps going on every flow while the node dies.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut rounds = 0u32;
            while !stop.load(Ordering::Relaxed) || rounds < 3 {
                for flow in &mut flows {
                    if let Err(e) = flow.exchange(CHUNK) {
                        return Err(format!("flow {} broke: {e}", flow.local));
                    }
                }
                rounds += 1;
            }
            Ok(flows)
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let died = site.kill_node(victim);
    let failover = site.time_until_withdrawn(victim, died, HOLD_TIME);
    report(&format!(
        "router dropped the dead node's next hop {} ms after its link was cut (BFD 100 ms x 3)",
        failover.as_millis()
    ));
    // Well inside the BGP hold time: BFD, not the hold timer, withdrew it.
    assert!(failover < HOLD_TIME, "withdrawn after {failover:?}");
    let rest: Vec<String> = site.nodes[1..].iter().map(|n| n.address.clone()).collect();
    assert_eq!(site.next_hops(), rest);

    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let mut flows = traffic
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
        .unwrap_or_else(|e| panic!("a flow did not survive the node's death: {e}"));
    for flow in &mut flows {
        flow.exchange(CHUNK)
            .unwrap_or_else(|e| panic!("flow {} after the failover: {e}", flow.local));
        assert!(flow.echoed >= 5 * CHUNK as u64);
    }
    // The victim's flows reached the survivors mid-connection: connection-table misses on
    // non-SYN packets, placed by the same table (another backend would have reset them).
    let moved = (1..3).map(|i| site.new_flows(i)).sum::<u64>() - survivors_before;
    assert!(
        moved >= on_victim,
        "{moved} flows placed by the survivors, fewer than the victim's {on_victim}"
    );
    report(&format!(
        "flows kept: {LONG_LIVED} of {LONG_LIVED} (the dead node carried {on_victim}; \
         {moved} flows re-placed by the survivors), every byte echoed in order"
    ));

    // New flows spread over the two survivors, each on the model's backend.
    let before: Vec<u64> = (1..3).map(|i| site.new_flows(i)).collect();
    drop(open_flows(&site, 200));
    let after: Vec<u64> = (1..3).map(|i| site.new_flows(i)).collect();
    for k in 0..2 {
        assert!(
            after[k] > before[k],
            "survivor {} took no new flows: {before:?} -> {after:?}",
            k + 1
        );
    }
}

#[test]
fn a_drained_node_withdraws_its_flows_go_on_and_undrain_announces_again() {
    if !ready() {
        return;
    }
    let site = ScaleOut::new(2, 2);
    let both: Vec<String> = site.nodes.iter().map(|n| n.address.clone()).collect();
    let status = site.sluice(0, &["status"]);
    assert!(
        status.contains("\"announced\": true") && status.contains("\"table\": 100"),
        "status shows the announced VIP:\n{status}"
    );
    assert_eq!(
        site.metric(0, "sluice_announce_vip_announced"),
        1.0,
        "metrics show the announced VIP"
    );
    let mut flows = open_flows(&site, LONG_LIVED);
    let on_drained = site.new_flows(0);
    assert!(on_drained > 0, "node 0 carries none of {LONG_LIVED} flows");

    let answer = site.sluice(0, &["drain-node"]);
    assert!(answer.contains("node drained"), "{answer}");
    site.wait_for_next_hops(&both[1..], Duration::from_secs(5));
    let status = site.sluice(0, &["status"]);
    assert!(
        status.contains("\"node_drained\": true")
            && status.contains("\"reason\": \"node_drained\""),
        "status shows the drain:\n{status}"
    );
    assert_eq!(site.metric(0, "sluice_announce_node_drained"), 1.0);
    assert_eq!(site.metric(0, "sluice_announce_vip_announced"), 0.0);
    for flow in &mut flows {
        flow.exchange(CHUNK)
            .unwrap_or_else(|e| panic!("flow {} after the drain: {e}", flow.local));
    }
    // New flows avoid the drained node.
    let drained_before = site.new_flows(0);
    drop(open_flows(&site, 100));
    assert_eq!(
        site.new_flows(0),
        drained_before,
        "the drained node took new flows"
    );
    report(&format!(
        "drain: {LONG_LIVED} of {LONG_LIVED} flows kept (node 0 carried {on_drained})"
    ));

    site.sluice(0, &["undrain-node"]);
    site.wait_for_next_hops(&both, Duration::from_secs(10));
    for flow in &mut flows {
        flow.exchange(CHUNK)
            .unwrap_or_else(|e| panic!("flow {} after the undrain: {e}", flow.local));
    }
}

#[test]
fn shutdown_withdraws_before_detaching_and_flows_go_on() {
    if !ready() {
        return;
    }
    let mut site = ScaleOut::new(2, 2);
    let mut flows = open_flows(&site, LONG_LIVED);
    let agent = site.nodes[0]
        .agent
        .take()
        .unwrap_or_else(|| panic!("node 0 has no agent"));
    let log = agent.log();
    let stopping = Instant::now();
    let status = agent.stop(Duration::from_secs(15));
    assert!(status.success(), "sluice exited with {status}; log:\n{log}");
    // The route went before the agent exited: it waits out withdraw_grace (2 s, ample for
    // the router to converge even on a loaded machine) before detaching and exiting.
    let only: Vec<String> = vec![site.nodes[1].address.clone()];
    assert_eq!(
        site.next_hops(),
        only,
        "VIP still announced after SIGTERM ({:?})",
        stopping.elapsed()
    );
    for flow in &mut flows {
        flow.exchange(CHUNK)
            .unwrap_or_else(|e| panic!("flow {} after node 0 stopped: {e}", flow.local));
    }
    eventually(Duration::from_secs(1), || {
        let routes = site.nodes[0].ns.ip(["route", "show", "table", "100"]);
        if routes.trim().is_empty() {
            Ok(())
        } else {
            Err(format!("routes left in table 100: {routes}"))
        }
    });
}

#[test]
fn a_vip_without_healthy_backends_is_withdrawn_and_comes_back_with_them() {
    if !ready() {
        return;
    }
    // One backend, in a pool that refuses traffic when none is healthy.
    let site = ScaleOut::new(2, 1);
    let both: Vec<String> = site.nodes.iter().map(|n| n.address.clone()).collect();
    site.set_backend_link(0, false);
    site.wait_for_next_hops(&[], Duration::from_secs(10));
    let status = site.sluice(0, &["status"]);
    assert!(
        status.contains("\"reason\": \"no_backends\"") && status.contains("\"announced\": false"),
        "status shows why the VIP is withdrawn:\n{status}"
    );
    site.set_backend_link(0, true);
    site.wait_for_next_hops(&both, Duration::from_secs(15));
    let mut flows = open_flows(&site, 10);
    for flow in &mut flows {
        flow.exchange(CHUNK)
            .unwrap_or_else(|e| panic!("flow {} after the backend came back: {e}", flow.local));
    }
}
