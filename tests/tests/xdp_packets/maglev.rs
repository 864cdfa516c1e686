//! Differential test of backend selection: thousands of random flows through the program, each
//! landing on the backend the userspace model picks, `table[maglev_slot(flow_hash(..), M)]`
//! over a ring `MaglevTable::build` filled. Random but seeded, so a failure reproduces.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::hash::{FlowHashInput, flow_hash, maglev_slot};
use lb_common::maglev::{BackendKey, MaglevBackend, MaglevTable};
use lb_common::service::{SERVICE_NAT, ServiceValue};
use lb_common::stats::Reason;

use crate::frames::{Frame, L4, sock, verify_checksums};
use crate::lab::{
    Dataplane, ETH0_MAC, Family, Lab, XDP_TX, backend_ip, backend_mac, backend_value, vip,
};

/// Fixed so a failure reproduces; change it to explore.
const RNG_SEED: u64 = 0x51_u64 << 56 | 0x00c0_ffee;
const FLOWS_PER_SERVICE: usize = 1500;
const WEIGHTS: [u32; 7] = [1, 2, 3, 1, 5, 2, 4];
const BACKEND_PORT: u16 = 9000;

/// SplitMix64: a tiny, well-known generator, enough for test inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

struct Service {
    family: Family,
    l4: L4,
    port: u16,
    table_size: u32,
    hash_seed: u32,
}

const SERVICES: [Service; 4] = [
    Service {
        family: Family::V4,
        l4: L4::Tcp,
        port: 80,
        table_size: 65537,
        hash_seed: 0,
    },
    Service {
        family: Family::V4,
        l4: L4::Udp,
        port: 53,
        table_size: 4099,
        hash_seed: 0x9e37_79b9,
    },
    Service {
        family: Family::V6,
        l4: L4::Tcp,
        port: 443,
        table_size: 4099,
        hash_seed: 1,
    },
    Service {
        family: Family::V6,
        l4: L4::Udp,
        port: 4789,
        table_size: 65537,
        hash_seed: 0xdead_beef,
    },
];

/// Any IPv4 address; an IPv6 global unicast one (2000::/3): the kernel's FIB does not forward
/// from link-local or multicast sources, so the program passes those (`PassNoRoute`).
fn random_client(rng: &mut Rng, family: Family) -> IpAddr {
    match family {
        Family::V4 => Ipv4Addr::from(rng.next() as u32).into(),
        Family::V6 => {
            let bits = u128::from(rng.next()) << 64 | u128::from(rng.next());
            Ipv6Addr::from(bits >> 3 | 1 << 125).into()
        }
    }
}

/// The backend the model picks for a flow: an index into `WEIGHTS`.
fn model(table: &MaglevTable, svc: &Service, src: IpAddr, src_port: u16) -> usize {
    let protocol = svc.l4.protocol();
    let input = match (src, vip(svc.family)) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            FlowHashInput::from_v4(s.octets(), d.octets(), src_port, svc.port, protocol)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            FlowHashInput::from_v6(s.octets(), d.octets(), src_port, svc.port, protocol)
        }
        _ => unreachable!("one family per service"),
    };
    let slot = maglev_slot(flow_hash(&input, svc.hash_seed), svc.table_size);
    table.slots()[slot as usize] as usize
}

/// Fills backend ids `10 * (n + 1) + i` (backend `i`), the ring at `offset`, and the service.
fn install(dp: &mut Dataplane, n: u32, svc: &Service, offset: u32) -> MaglevTable {
    let backend = |i: usize| sock(backend_ip(i, svc.family), BACKEND_PORT);
    let backends: Vec<MaglevBackend> = (0..WEIGHTS.len())
        .map(|i| MaglevBackend {
            key: BackendKey::from(backend(i)),
            weight: WEIGHTS[i],
        })
        .collect();
    let table = MaglevTable::build(&backends, svc.table_size, svc.hash_seed)
        .unwrap_or_else(|e| panic!("building the table: {e}"));
    let id = |i: u32| 10 * (n + 1) + i;
    for i in 0..WEIGHTS.len() {
        dp.set_backend(id(i as u32), backend_value(backend(i)));
    }
    let ring: Vec<u32> = table.slots().iter().map(|&slot| id(slot)).collect();
    dp.set_ring(offset, &ring);
    let value = ServiceValue {
        id: n,
        flags: SERVICE_NAT,
        ring_offset: offset,
        table_size: svc.table_size,
        hash_seed: svc.hash_seed,
        region_start: 0,
    };
    dp.set_service(sock(vip(svc.family), svc.port), svc.l4, value);
    table
}

/// Sends one random flow; returns the backend index it went to, or what went wrong.
fn send_random_flow(
    dp: &Dataplane,
    rng: &mut Rng,
    svc: &Service,
    table: &MaglevTable,
) -> Result<usize, String> {
    let src = random_client(rng, svc.family);
    let src_port = rng.next() as u16;
    let vip = sock(vip(svc.family), svc.port);
    let len = (rng.next() % 64) as usize;
    let input = Frame {
        payload: rng.bytes(len),
        ..Frame::new(svc.l4, sock(src, src_port), vip)
    };
    let want = model(table, svc, src, src_port);
    let expected = Frame {
        src_mac: ETH0_MAC,
        dst_mac: backend_mac(want),
        dst: sock(backend_ip(want, svc.family), BACKEND_PORT),
        ttl: 63,
        ..input.clone()
    };
    let (action, out) = dp.run(&input.bytes());
    let got = (0..WEIGHTS.len()).find(|&i| out.get(..6) == Some(&backend_mac(i)[..]));
    if action == XDP_TX && out == expected.bytes() && verify_checksums(&out).is_ok() {
        return Ok(want);
    }
    Err(format!(
        "{:?} {src} port {src_port} -> {vip}: verdict {action}, backend {got:?}, model: {want}",
        svc.l4
    ))
}

#[test]
fn random_flows_land_where_the_maglev_model_says() {
    if !sluice_tests::privileged() {
        return;
    }
    let mut rng = Rng(RNG_SEED);
    Lab::new("xdp").run(|dp| {
        let mut offset = 0;
        let mut tables = Vec::new();
        for (n, svc) in (0u32..).zip(&SERVICES) {
            tables.push(install(dp, n, svc, offset));
            offset += svc.table_size;
        }
        let mut mismatches = Vec::new();
        for (svc, table) in SERVICES.iter().zip(&tables) {
            let mut hits = [0usize; WEIGHTS.len()];
            for _ in 0..FLOWS_PER_SERVICE {
                match send_random_flow(dp, &mut rng, svc, table) {
                    Ok(backend) => hits[backend] += 1,
                    Err(e) => mismatches.push(e),
                }
            }
            let what = (svc.family, svc.l4);
            assert!(
                hits.iter().all(|&h| h > 0),
                "{what:?}: idle backends: {hits:?}"
            );
        }
        let total = (SERVICES.len() * FLOWS_PER_SERVICE) as u64;
        assert!(
            mismatches.is_empty(),
            "{} of {total} flows differ from the model (RNG seed {RNG_SEED:#x}); first ones:\n{}",
            mismatches.len(),
            mismatches[..mismatches.len().min(10)].join("\n")
        );
        let counts = dp.packet_counts();
        let forwarded = counts[Reason::ForwardNat as usize];
        assert_eq!(forwarded, total, "every flow counted as a NAT forward");
    });
}
