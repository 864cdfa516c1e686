//! `cargo xtask demo --scale-out`: two Sluice nodes behind a router, VIPs announced by BGP
//! (BIRD 2, `config/bird/`), flows spread over both by ECMP, one node killed and its flows
//! carrying on through the other, on the same backends.
//!
//! The topology is the scale-out tests' (`sluice_tests::scale_out`): a router namespace
//! with BIRD and layer-4 ECMP, two nodes each running `sluice run` and BIRD, three DSR
//! backends that echo, and a client. Everything is a guard: it goes away when the demo ends,
//! fails or is stopped with Ctrl-C (checked between steps).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sluice_tests::scale_out::{Flow, HOLD_TIME, ScaleOut, VIP};

use super::Interrupted;
use super::signals::{self, StopFlag};
use crate::shell::step;

/// Long-lived flows the demo holds across the failure.
const FLOWS: usize = 40;
/// Bytes each flow sends, and must get back, per exchange.
const CHUNK: usize = 4096;

/// Runs the scale-out tour (as root).
pub fn run() -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the scale-out demo creates network namespaces and loads XDP programs: run it as \
             root (`sudo -E env PATH=\"$PATH\" cargo xtask demo --scale-out`)"
        );
    }
    for (tool, package) in [
        ("bird", "bird2"),
        ("birdc", "bird2"),
        ("ethtool", "ethtool"),
    ] {
        if super::which(tool).is_none() {
            bail!("the scale-out demo needs `{tool}` (Debian: apt-get install {package})");
        }
    }
    let stop = signals::install()?;
    step(
        "Building",
        "a router (BIRD, ECMP by layer-4 hash), 2 Sluice nodes (each with BIRD), 3 DSR \
         backends and a client, in network namespaces",
    );
    let mut site = std::panic::catch_unwind(|| ScaleOut::new(2, 3))
        .map_err(|_| anyhow::anyhow!("building the scale-out topology failed (see above)"))?;
    tour(&mut site, &stop)
}

fn tour(site: &mut ScaleOut, stop: &StopFlag) -> Result<()> {
    let checkpoint = || {
        if stop.is_set() {
            Err(anyhow::Error::new(Interrupted))
        } else {
            Ok(())
        }
    };
    println!("\nThe router learned VIP {VIP} from both nodes by BGP:");
    print_route(site);
    checkpoint()?;

    let model = site.model();
    let mut flows = site
        .client
        .in_ns(|| {
            (0..FLOWS)
                .map(|_| Flow::open())
                .collect::<std::io::Result<Vec<_>>>()
        })
        .context("opening flows through the VIP")?;
    for flow in &mut flows {
        flow.exchange(CHUNK)
            .with_context(|| format!("flow {}", flow.local))?;
    }
    let on_model = flows
        .iter()
        .filter(|f| f.served_by == model.predict(f.local))
        .count();
    let carried: Vec<u64> = (0..2).map(|i| site.new_flows(i)).collect();
    println!(
        "\n{FLOWS} long-lived TCP flows from the client: node 1 carries {}, node 2 carries {}.",
        carried[0], carried[1]
    );
    println!("Per backend: {:?}", per_backend(&flows));
    println!(
        "{on_model} of {FLOWS} on the backend lb-common's Maglev model predicts (both nodes \
         build the same table)."
    );
    checkpoint()?;

    println!("\nNode 1 dies: its link is cut, its agent and BIRD are killed.");
    let died = site.kill_node(0);
    let withdrawn = site.time_until_withdrawn(0, died, HOLD_TIME);
    println!(
        "The router dropped node 1's next hop {} ms later (BFD, 100 ms x 3):",
        withdrawn.as_millis()
    );
    print_route(site);
    checkpoint()?;

    let started = Instant::now();
    let mut kept = 0;
    for flow in &mut flows {
        match flow.exchange(CHUNK) {
            Ok(()) => kept += 1,
            Err(e) => println!("  flow {} broke: {e}", flow.local),
        }
    }
    println!(
        "\n{kept} of {FLOWS} flows carried on through node 2 (on their backends: each echoed \
         every byte; {} ms for all to answer). Node 2 placed {} flows it had never seen.",
        started.elapsed().as_millis(),
        site.new_flows(1) - carried[1]
    );
    checkpoint()?;

    let before = site.new_flows(1);
    let fresh = site
        .client
        .in_ns(|| {
            (0..100)
                .map(|_| Flow::open())
                .collect::<std::io::Result<Vec<_>>>()
        })
        .context("opening new flows after the failure")?;
    let fresh_on_model = fresh
        .iter()
        .filter(|f| f.served_by == model.predict(f.local))
        .count();
    println!(
        "100 new flows: node 2 took {}, {fresh_on_model} on the model's backend.",
        site.new_flows(1) - before
    );
    std::thread::sleep(Duration::from_millis(200));
    step(
        "Removing",
        "every namespace, daemon and agent the demo made",
    );
    if kept != FLOWS {
        bail!("{} flows broke when node 1 died", FLOWS - kept);
    }
    Ok(())
}

fn print_route(site: &ScaleOut) {
    for line in site.router.ip(["-4", "route", "show", VIP]).lines() {
        println!("  {line}");
    }
}

fn per_backend(flows: &[Flow]) -> BTreeMap<&str, usize> {
    let mut hits = BTreeMap::new();
    for flow in flows {
        *hits.entry(flow.served_by.as_str()).or_default() += 1;
    }
    hits
}
