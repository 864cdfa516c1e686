//! Maglev tables as the agent builds them (`lb-common`, optimised even in dev builds): build
//! time by backend count, and the share of slots that move when one backend leaves.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Instant;

use anyhow::{Result, anyhow};
use lb_common::maglev::{
    BackendKey, DEFAULT_TABLE_SIZE, MaglevBackend, MaglevTable, slots_changed,
};
use serde::Serialize;

use crate::bench::compare::median;
use crate::bench::interrupt;

/// Backend counts measured.
pub const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];
/// Builds timed per size, at least (the median is reported).
const MIN_BUILDS: u32 = 5;
const SEED: u32 = 0;

#[derive(Serialize)]
pub struct MaglevRow {
    pub backends: usize,
    pub table_size: u32,
    pub build_ms_median: f64,
    pub build_ms: Vec<f64>,
    /// Slots whose backend changed when the middle backend of the list was removed.
    pub moved_slots: usize,
    pub moved_share: f64,
    /// The removed backend's own share (1/N): what any consistent hash must move.
    pub removed_share: f64,
}

/// Measures every size in [`SIZES`], timing `max(builds, 5)` builds of each.
pub fn measure(builds: u32) -> Result<Vec<MaglevRow>> {
    let builds = builds.max(MIN_BUILDS);
    SIZES
        .iter()
        .map(|&n| {
            interrupt::check()?;
            row(n, builds)
        })
        .collect()
}

fn row(n: usize, builds: u32) -> Result<MaglevRow> {
    let list = backends(n);
    let mut times = Vec::new();
    let mut before = build(&list)?;
    for _ in 0..builds {
        let start = Instant::now();
        before = build(&list)?;
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    let mut rest = list;
    rest.remove(n / 2);
    let after = build(&rest)?;
    let moved = slots_changed(&before, &after);
    Ok(MaglevRow {
        backends: n,
        table_size: DEFAULT_TABLE_SIZE,
        build_ms_median: median(&times).unwrap_or(f64::NAN),
        build_ms: times,
        moved_slots: moved,
        moved_share: moved as f64 / f64::from(DEFAULT_TABLE_SIZE),
        removed_share: 1.0 / n as f64,
    })
}

fn build(list: &[MaglevBackend]) -> Result<MaglevTable> {
    MaglevTable::build(list, DEFAULT_TABLE_SIZE, SEED)
        .map_err(|e| anyhow!("building a table of {} backends: {e}", list.len()))
}

/// `n` backends of weight 1 on 10.0.0.0/8, port 80, as a config would list them.
fn backends(n: usize) -> Vec<MaglevBackend> {
    (0..n as u32)
        .map(|i| MaglevBackend {
            key: BackendKey::from(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(0x0a00_0000 | (i + 1)),
                80,
            ))),
            weight: 1,
        })
        .collect()
}
