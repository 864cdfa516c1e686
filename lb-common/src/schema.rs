//! The schema version of the maps the agent pins: the pinned maps of a running data path are
//! reused by the next agent only when both agree on every byte of every map type.
//!
//! [`LAYOUT_DIGEST`] hashes the size and field offsets of each pinned map's key and value type
//! and the maps' fixed sizes. The build fails when it differs from [`EXPECTED_DIGEST`], so a
//! layout change cannot ship under an old [`SCHEMA_VERSION`]: whoever changes a layout bumps
//! the version (a new pin folder) and records the new digest.

use core::mem::{offset_of, size_of};

use crate::backend::BackendValue;
use crate::flow::{FlowKey, FlowValue, NatValue};
use crate::service::{ServiceKey, ServiceValue};
use crate::stats::{Counter, FlowCounter, Reason};
use crate::{addr::WireAddr, limits};

/// Version of the pinned map layouts; names the pin folder (`v1`, `v2`, ...).
pub const SCHEMA_VERSION: u32 = 2;

/// [`LAYOUT_DIGEST`] as of [`SCHEMA_VERSION`].
pub const EXPECTED_DIGEST: u64 = 0x8dc1_3ed7_f1e5_2b5b;

/// Sizes and offsets that make up the pinned layouts, in a fixed order.
const LAYOUT: &[usize] = &[
    size_of::<WireAddr>(),
    size_of::<FlowKey>(),
    offset_of!(FlowKey, src_addr),
    offset_of!(FlowKey, dst_addr),
    offset_of!(FlowKey, src_port),
    offset_of!(FlowKey, dst_port),
    offset_of!(FlowKey, protocol),
    offset_of!(FlowKey, family),
    size_of::<FlowValue>(),
    offset_of!(FlowValue, backend_id),
    offset_of!(FlowValue, backend_generation),
    offset_of!(FlowValue, last_seen_ns),
    offset_of!(FlowValue, nat_port),
    offset_of!(FlowValue, state),
    size_of::<NatValue>(),
    offset_of!(NatValue, vip),
    offset_of!(NatValue, vip_port),
    offset_of!(NatValue, client_mac),
    offset_of!(NatValue, local_mac),
    offset_of!(NatValue, client_port),
    offset_of!(NatValue, backend_id),
    offset_of!(NatValue, client_ifindex),
    size_of::<ServiceKey>(),
    offset_of!(ServiceKey, addr),
    offset_of!(ServiceKey, port),
    offset_of!(ServiceKey, protocol),
    offset_of!(ServiceKey, family),
    size_of::<ServiceValue>(),
    offset_of!(ServiceValue, id),
    offset_of!(ServiceValue, flags),
    offset_of!(ServiceValue, ring_offset),
    offset_of!(ServiceValue, table_size),
    offset_of!(ServiceValue, hash_seed),
    offset_of!(ServiceValue, region_start),
    size_of::<BackendValue>(),
    offset_of!(BackendValue, addr),
    offset_of!(BackendValue, port),
    offset_of!(BackendValue, family),
    offset_of!(BackendValue, flags),
    offset_of!(BackendValue, generation),
    size_of::<Counter>(),
    size_of::<FlowCounter>(),
    Reason::COUNT as usize,
    limits::MAX_SERVICES as usize,
    limits::MAX_BACKENDS as usize,
    limits::SETTINGS_COUNT as usize,
];

/// FNV-1a over [`LAYOUT`], computed at build time.
pub const LAYOUT_DIGEST: u64 = digest(LAYOUT);

const _: () = assert!(
    LAYOUT_DIGEST == EXPECTED_DIGEST,
    "a pinned map layout changed: bump SCHEMA_VERSION and set EXPECTED_DIGEST to the new \
     LAYOUT_DIGEST (`cargo test -p lb-common schema` prints it)"
);

const fn digest(values: &[usize]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < values.len() {
        let bytes = (values[i] as u64).to_le_bytes();
        let mut j = 0;
        while j < bytes.len() {
            hash ^= bytes[j] as u64;
            hash = hash.wrapping_mul(0x0100_0000_01b3);
            j += 1;
        }
        i += 1;
    }
    hash
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    #[test]
    fn schema_digest_is_recorded_and_moves_with_the_layout() {
        // Printed so a layout change can record the new value.
        std::println!("LAYOUT_DIGEST = {LAYOUT_DIGEST:#x}");
        assert_eq!(LAYOUT_DIGEST, EXPECTED_DIGEST);
        let mut changed = [0usize; 64];
        changed[..LAYOUT.len()].copy_from_slice(LAYOUT);
        changed[1] += 8;
        assert_ne!(digest(&changed[..LAYOUT.len()]), LAYOUT_DIGEST);
    }
}
