//! Time from a backend's death to its removal from the kernel's Maglev table, on the L4
//! topology: TCP health checks every 500 ms, down after 2 failures (200 ms timeout), no
//! jitter. A backend "dies" when its link goes down; it is removed when the agent flips the
//! service's double buffer, which the bench sees by polling the service's map entry. The new
//! table is then read whole to check the backend is gone from it.
//!
//! After each death the backend comes back, and the time until it is readmitted (rise 2) is
//! measured the same way.

use std::collections::HashMap as StdHashMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use aya::maps::{Array, HashMap, Map, MapData};
use lb_common::addr::{PROTO_TCP, to_wire};
use lb_common::backend::BackendValue;
use lb_common::maps;
use lb_common::service::{ServiceKey, ServiceValue};
use serde::Serialize;
use sluice_tests::{program_map, xdp_program};

use crate::bench::agent::{ADMIN, Agent};
use crate::bench::l4::topology::{BACKENDS, RR_PORT, Topology, VIP};
use crate::bench::{interrupt, write};
use crate::shell::step;

pub const INTERVAL_MS: u64 = 500;
pub const TIMEOUT_MS: u64 = 200;
pub const FALL: u64 = 2;
pub const RISE: u64 = 2;
/// How often the service's map entry is read.
const POLL: Duration = Duration::from_millis(2);

#[derive(Serialize)]
pub struct RemovalReport {
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub fall: u64,
    pub rise: u64,
    /// Death to the flip of the table without the backend, per round.
    pub removed_ms: Vec<f64>,
    /// Link back up to the flip of the table with the backend again, per round.
    pub readmitted_ms: Vec<f64>,
}

pub fn measure(sluice: &Path, rounds: u32) -> Result<RemovalReport> {
    let dir = tempfile::Builder::new()
        .prefix("sluice-bench-removal-")
        .tempdir()
        .context("creating a temp folder")?;
    let config = dir.path().join("sluice.toml");
    write(&config, &config_text())?;
    let topology = Topology::new()?;
    let agent = Agent::start(
        sluice,
        &topology.lb,
        None,
        &config,
        &dir.path().join("sluice.log"),
    )?;
    let maps = KernelTables::open(&topology)?;
    let dead: IpAddr = BACKENDS[0].parse()?;
    wait_healthy(&agent, 2)?;

    let mut report = RemovalReport {
        interval_ms: INTERVAL_MS,
        timeout_ms: TIMEOUT_MS,
        fall: FALL,
        rise: RISE,
        removed_ms: Vec::new(),
        readmitted_ms: Vec::new(),
    };
    for round in 0..rounds {
        interrupt::check()?;
        if !maps.backend_addresses()?.contains(&dead) {
            bail!("{dead} is not in the kernel's table before it dies");
        }
        let before = maps.service()?;
        let died = Instant::now();
        topology.kill_backend(0);
        let removed = wait_for_flip(&maps, before, died)?;
        if maps.backend_addresses()?.contains(&dead) {
            bail!("the table flipped after {dead}'s death, yet it still holds {dead}");
        }
        let before = maps.service()?;
        let revived = Instant::now();
        topology.revive_backend(0);
        let readmitted = wait_for_flip(&maps, before, revived)?;
        step(
            "Measured",
            &format!(
                "round {round}: dead backend out of the kernel table after {:.0} ms, back \
                 {:.0} ms after it revived",
                ms(removed),
                ms(readmitted)
            ),
        );
        report.removed_ms.push(ms(removed));
        report.readmitted_ms.push(ms(readmitted));
        wait_healthy(&agent, 2)?;
    }
    drop(agent);
    Ok(report)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Polls the service's map entry until it differs from `before`; returns the time since
/// `since`. Fails after 10 s.
fn wait_for_flip(maps: &KernelTables, before: ServiceValue, since: Instant) -> Result<Duration> {
    let limit = Duration::from_secs(10);
    loop {
        if maps.service()? != before {
            return Ok(since.elapsed());
        }
        if since.elapsed() > limit {
            bail!("the service's table did not change within {limit:?}");
        }
        interrupt::check()?;
        std::thread::sleep(POLL);
    }
}

/// Waits until the status shows `count` healthy backends in the pool.
fn wait_healthy(agent: &Agent, count: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = agent.status()?;
        let healthy = status["pools"]
            .as_array()
            .and_then(|pools| pools.iter().find(|p| p["name"] == "rr"))
            .and_then(|p| p["backends"].as_array())
            .map_or(0, |b| b.iter().filter(|b| b["healthy"] == true).count());
        if healthy == count {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{healthy} healthy backends after 15 s, want {count}: {status}");
        }
        interrupt::sleep(Duration::from_millis(50))?;
    }
}

/// The maps of the program attached to the load balancer's eth0.
struct KernelTables {
    key: ServiceKey,
    services: HashMap<MapData, ServiceKey, ServiceValue>,
    backends: Array<MapData, BackendValue>,
    rings: Array<MapData, u32>,
}

impl KernelTables {
    fn open(topology: &Topology) -> Result<KernelTables> {
        let (program, _) = xdp_program(&topology.lb, "eth0")
            .context("no XDP program on the load balancer's eth0")?;
        let map = |name: &str| program_map(program, name).map_err(|e| anyhow!(e));
        let services = HashMap::try_from(Map::HashMap(map(maps::SERVICES)?))
            .context("SERVICES is not the expected hash map")?;
        let backends = Array::try_from(Map::Array(map(maps::BACKENDS)?))
            .context("BACKENDS is not the expected array")?;
        let rings = Array::try_from(Map::Array(map(maps::MAGLEV_RINGS)?))
            .context("MAGLEV_RINGS is not the expected array")?;
        let (addr, family) = to_wire(VIP.parse()?);
        let key = ServiceKey {
            addr,
            port: RR_PORT.to_be(),
            protocol: PROTO_TCP,
            family,
        };
        Ok(KernelTables {
            key,
            services,
            backends,
            rings,
        })
    }

    fn service(&self) -> Result<ServiceValue> {
        self.services
            .get(&self.key, 0)
            .context("reading the service's entry in SERVICES")
    }

    /// The addresses of the backends the service's active table points at.
    fn backend_addresses(&self) -> Result<Vec<IpAddr>> {
        let service = self.service()?;
        let mut ids: StdHashMap<u32, ()> = StdHashMap::new();
        for slot in service.ring_offset..service.ring_offset + service.table_size {
            let id = self
                .rings
                .get(&slot, 0)
                .with_context(|| format!("reading MAGLEV_RINGS[{slot}]"))?;
            ids.insert(id, ());
        }
        let mut addrs = Vec::new();
        for id in ids.into_keys() {
            let backend = self
                .backends
                .get(&id, 0)
                .with_context(|| format!("reading BACKENDS[{id}]"))?;
            let addr = lb_common::addr::from_wire(&backend.addr, backend.family)
                .with_context(|| format!("BACKENDS[{id}] has family {}", backend.family))?;
            addrs.push(addr);
        }
        Ok(addrs)
    }
}

fn config_text() -> String {
    let backends: Vec<String> = BACKENDS
        .iter()
        .map(|b| format!("{{ address = \"{b}\", port = {RR_PORT} }}"))
        .collect();
    format!(
        "[admin]
listen = \"{ADMIN}\"

[[interface]]
name = \"eth0\"
xdp_mode = \"native\"

[[pool]]
name = \"rr\"
panic_threshold = 0
backend = [{backends}]
[pool.health_check]
kind = \"tcp\"
interval = \"{INTERVAL_MS}ms\"
timeout = \"{TIMEOUT_MS}ms\"
fall = {FALL}
rise = {RISE}
jitter = 0

[[service]]
name = \"rr\"
vip = \"{VIP}\"
port = {RR_PORT}
protocol = \"tcp\"
l4 = {{ mode = \"dsr\", pool = \"rr\" }}
",
        backends = backends.join(", ")
    )
}
