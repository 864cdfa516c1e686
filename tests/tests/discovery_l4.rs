//! An L4 pool that follows SRV records: the weights the DNS server gives reach the
//! kernel's Maglev table (read from the program's maps), and a change of records rewrites
//! the table as a health change does.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use lb_common::maglev::{BackendKey, MaglevBackend, MaglevTable};
use sluice_tests::dns::{Srv, TestDns};
use sluice_tests::{
    Netns, SluiceAgent, add_addr, eventually, maglev_shares, privileged, sysctl, veth, xdp_program,
};

const TABLE_SIZE: u32 = 251;
const VIP: [u8; 4] = [10, 99, 0, 1];
const PORT: u16 = 80;
const WAIT: Duration = Duration::from_secs(30);

fn backend(last: u8) -> SocketAddr {
    SocketAddr::from(([10, 40, 0, last], 8080))
}

/// The slots each backend gets in the table Sluice should build for `weights`.
fn expected(weights: &[(SocketAddr, u32)]) -> BTreeMap<SocketAddr, usize> {
    let input: Vec<MaglevBackend> = weights
        .iter()
        .map(|(address, weight)| MaglevBackend {
            key: BackendKey::from(*address),
            weight: *weight,
        })
        .collect();
    let table = MaglevTable::build(&input, TABLE_SIZE, 0).unwrap_or_else(|e| panic!("{e}"));
    let mut shares = BTreeMap::new();
    for index in table.slots() {
        *shares.entry(weights[*index as usize].0).or_default() += 1;
    }
    shares
}

fn srv(weights: &[(&'static str, u16)]) -> Vec<Srv<'static>> {
    weights
        .iter()
        .map(|(target, weight)| Srv {
            priority: 0,
            weight: *weight,
            port: 8080,
            target,
        })
        .collect()
}

/// Waits until the kernel's table for the VIP gives each backend the slots in `want`.
fn table_is(ns: &Netns, agent: &mut SluiceAgent, want: BTreeMap<SocketAddr, usize>, what: &str) {
    eventually(WAIT, || {
        agent.assert_running();
        let (prog, _) = xdp_program(ns, "lb0")
            .ok_or_else(|| format!("no program on lb0 yet; log:\n{}", agent.log()))?;
        let shares = maglev_shares(prog, IpAddr::from(VIP), PORT)?;
        if shares == want {
            Ok(())
        } else {
            Err(format!(
                "{what}: the kernel table has {shares:?}, want {want:?}"
            ))
        }
    });
}

#[test]
fn srv_weights_reach_the_maglev_table_and_changes_rewrite_it() {
    if !privileged() {
        return;
    }
    let ns = Netns::new("dl4");
    veth(&ns, "lb0", &ns, "peer0");
    add_addr(&ns, "lb0", "10.40.0.1/24");
    sysctl(&ns, "net.ipv4.conf.lb0.forwarding", "1");
    sysctl(&ns, "net.ipv4.conf.all.forwarding", "1");
    let dns = TestDns::start(&ns, SocketAddr::from(([127, 0, 0, 1], 5300)));
    dns.set_addresses("b1.test", &[IpAddr::from([10, 40, 0, 11])], 1);
    dns.set_addresses("b2.test", &[IpAddr::from([10, 40, 0, 12])], 1);
    dns.set_srv("_app._tcp.test", &srv(&[("b1.test", 1), ("b2.test", 3)]), 1);
    let config = format!(
        "[[interface]]\nname = \"lb0\"\nxdp_mode = \"generic\"\n\
         [[pool]]\nname = \"app\"\n[pool.health_check]\nkind = \"none\"\n\
         [pool.discovery.dns]\nname = \"_app._tcp.test.\"\nrecord = \"srv\"\nmin_ttl = \"1s\"\nmax_ttl = \"1s\"\nservers = [\"{}\"]\n\
         [[service]]\nname = \"vip\"\nvip = \"10.99.0.1\"\nport = {PORT}\nprotocol = \"tcp\"\n\
         [service.l4]\nmode = \"nat\"\npool = \"app\"\nmaglev_table_size = {TABLE_SIZE}\n",
        dns.addr()
    );
    let mut agent = SluiceAgent::start(&ns, &config);
    let one = expected(&[(backend(11), 1), (backend(12), 3)]);
    assert!(
        one[&backend(12)] > 2 * one[&backend(11)],
        "weights 1:3 show: {one:?}"
    );
    table_is(&ns, &mut agent, one, "SRV weights 1 and 3");

    dns.set_srv("_app._tcp.test", &srv(&[("b1.test", 1), ("b2.test", 1)]), 1);
    table_is(
        &ns,
        &mut agent,
        expected(&[(backend(11), 1), (backend(12), 1)]),
        "reweighted to 1 and 1",
    );
    // Only the difference is written: the same backends, the service's table rewritten.
    let reweight = "services_added: 0, services_changed: 1, services_removed: 0, backends_added: 0, backends_removed: 0";
    let log = agent.log();
    assert!(
        log.contains(reweight),
        "a reweight changes the table only; log:\n{log}"
    );

    dns.set_srv("_app._tcp.test", &srv(&[("b2.test", 1)]), 1);
    table_is(
        &ns,
        &mut agent,
        BTreeMap::from([(backend(12), TABLE_SIZE as usize)]),
        "b1 removed",
    );
    let log = agent.log();
    assert!(
        log.contains("backends_added: 0, backends_removed: 1"),
        "one backend removed; log:\n{log}"
    );
    let status = agent.stop(WAIT);
    assert!(status.success(), "sluice exited with {status}");
}
