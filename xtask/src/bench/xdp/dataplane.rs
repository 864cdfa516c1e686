//! The loaded XDP object: its two programs run through BPF_PROG_TEST_RUN, and the maps the
//! bench reads back (global counters, connection table, NAT reverse table).

use std::collections::{HashMap as StdHashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result, bail};
use aya::maps::{HashMap, MapData, PerCpuArray};
use aya::programs::Xdp;
use aya::{Ebpf, EbpfLoader};
use lb_common::flow::{FlowKey, FlowValue, NatValue};
use lb_common::stats::{Counter, Reason};
use lb_common::{PASS_PROGRAM_NAME, XDP_PROGRAM_NAME, maps};
use sluice_tests::xdp_lab::{packets, test_run};

use super::services::{install_services, take};

/// Which program of the object a case runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    /// `sluice_pass`: returns XDP_PASS and touches nothing, the cost of the harness itself.
    Empty,
    /// `sluice_xdp`, the data path.
    Sluice,
}

impl Program {
    pub fn name(self) -> &'static str {
        match self {
            Program::Empty => PASS_PROGRAM_NAME,
            Program::Sluice => XDP_PROGRAM_NAME,
        }
    }
}

/// One BPF_PROG_TEST_RUN call's answer.
pub struct Run {
    pub verdict: u32,
    /// The kernel's own measure of the call: its time over `repeat`.
    pub ns: u32,
    /// Bytes of the output frame.
    pub len: usize,
}

/// The flows in the connection table and the NAT reverse table.
#[derive(Clone, Default)]
pub struct Flows {
    conntrack: HashSet<FlowKey>,
    nat_reverse: HashSet<FlowKey>,
}

/// The loaded programs and the maps the bench reads.
pub struct Dataplane {
    ebpf: Ebpf,
    ifindex: u32,
    stats: PerCpuArray<MapData, Counter>,
    conntrack: HashMap<MapData, FlowKey, FlowValue>,
    nat_reverse: HashMap<MapData, FlowKey, NatValue>,
    /// Every backend, by id.
    backends: StdHashMap<u32, SocketAddr>,
}

impl Dataplane {
    /// Loads both programs (a fresh load: maps start empty) and fills the maps. Call it on a
    /// thread inside the bench namespace, as `ifindex` (eth0's) is only valid there.
    pub fn load(object: &Path, ifindex: u32) -> Result<Dataplane> {
        let mut ebpf = EbpfLoader::new()
            .load_file(object)
            .with_context(|| format!("loading {}", object.display()))?;
        for program in [Program::Empty, Program::Sluice] {
            let name = program.name();
            let xdp: &mut Xdp = ebpf
                .program_mut(name)
                .with_context(|| format!("no program {name} in {}", object.display()))?
                .try_into()
                .with_context(|| format!("{name} is not an XDP program"))?;
            xdp.load()
                .with_context(|| format!("the verifier rejected {name}"))?;
        }
        let backends = install_services(&mut ebpf)?;
        let stats = PerCpuArray::try_from(take(&mut ebpf, maps::GLOBAL_STATS)?)?;
        let conntrack = HashMap::try_from(take(&mut ebpf, maps::CONNTRACK)?)?;
        let nat_reverse = HashMap::try_from(take(&mut ebpf, maps::NAT_REVERSE)?)?;
        Ok(Dataplane {
            ebpf,
            ifindex,
            stats,
            conntrack,
            nat_reverse,
            backends,
        })
    }

    pub fn program(&self, program: Program) -> Result<&Xdp> {
        let name = program.name();
        let found = self
            .ebpf
            .program(name)
            .with_context(|| format!("no program {name}"))?;
        found
            .try_into()
            .with_context(|| format!("{name} is not an XDP program"))
    }

    /// Runs `frame` through `program` as if it arrived on eth0: see [`run`].
    pub fn run(&self, program: &Xdp, frame: &[u8], out: &mut [u8], repeat: u32) -> Result<Run> {
        run(program, self.ifindex, frame, out, repeat)
    }

    /// GLOBAL_STATS packet counts summed over CPUs, in `Reason` slot order.
    pub fn counts(&self) -> Result<Vec<u64>> {
        global_counts(&self.stats)
    }

    pub fn flows(&self) -> Result<Flows> {
        let conntrack = self.conntrack.keys().collect::<Result<_, _>>();
        let nat_reverse = self.nat_reverse.keys().collect::<Result<_, _>>();
        Ok(Flows {
            conntrack: conntrack.context("listing CONNTRACK")?,
            nat_reverse: nat_reverse.context("listing NAT_REVERSE")?,
        })
    }

    /// Deletes every flow not in `keep`, so new-flow cases insert into a table of the same
    /// size every round instead of filling the LRU until it evicts. Returns how many it deleted.
    pub fn forget_flows_except(&mut self, keep: &Flows) -> Result<usize> {
        let now = self.flows()?;
        let mut deleted = 0;
        for key in now.conntrack.difference(&keep.conntrack) {
            self.conntrack
                .remove(key)
                .context("deleting from CONNTRACK")?;
            deleted += 1;
        }
        for key in now.nat_reverse.difference(&keep.nat_reverse) {
            self.nat_reverse
                .remove(key)
                .context("deleting from NAT_REVERSE")?;
            deleted += 1;
        }
        Ok(deleted)
    }

    /// The backend the connection table holds for `key`.
    pub fn backend_of(&self, key: &FlowKey) -> Result<SocketAddr> {
        let entry = self
            .conntrack
            .get(key, 0)
            .with_context(|| format!("no CONNTRACK entry for {key:?}"))?;
        match self.backends.get(&entry.backend_id) {
            Some(addr) => Ok(*addr),
            None => bail!(
                "CONNTRACK holds backend id {}, which the bench never set",
                entry.backend_id
            ),
        }
    }
}

/// Runs `frame` through `program` as if it arrived on interface `ifindex`, `repeat` times in
/// one call. The kernel copies the frame in afresh for each call but not between repeats, so
/// only `repeat = 1` is safe for a program that rewrites the frame, unless a wrapper restores
/// it (see `warm`); `Run::ns` is the average.
pub fn run(program: &Xdp, ifindex: u32, frame: &[u8], out: &mut [u8], repeat: u32) -> Result<Run> {
    let result = test_run(program, ifindex, frame, out, repeat)
        .with_context(|| format!("BPF_PROG_TEST_RUN on a {}-byte frame", frame.len()))?;
    Ok(Run {
        verdict: result.return_value,
        ns: u32::try_from(result.duration.as_nanos()).unwrap_or(u32::MAX),
        len: result.data_size_out as usize,
    })
}

/// GLOBAL_STATS packet counts of one loaded object summed over CPUs, in `Reason` slot order.
pub fn global_counts(stats: &PerCpuArray<MapData, Counter>) -> Result<Vec<u64>> {
    Reason::ALL
        .iter()
        .map(|reason| {
            packets(stats, *reason as u32)
                .with_context(|| format!("reading GLOBAL_STATS[{reason:?}]"))
        })
        .collect()
}
