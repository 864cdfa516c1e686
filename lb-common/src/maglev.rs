//! Weighted Maglev lookup tables (Eisenbud et al., NSDI 2016, section 3.4), built in userspace.
//!
//! The agent builds a table of `M` slots, each naming a backend, and writes it to a BPF map; the
//! XDP program picks `table[maglev_slot(flow_hash, M)]` (see [`crate::hash`]). Like the hash, the
//! table is part of the wire contract: every Sluice instance given the same backends, weights,
//! size and seed must build the same table, on any machine, in any order of input. So the
//! per-backend hashes are written out (in `permutation`) rather than taken from `std`, and
//! golden-value tests pin them and whole tables.
//!
//! Each backend walks a permutation of the slots built from the paper's per-key offset and
//! skip (see `permutation` for the one change), and backends take turns in
//! virtual time (stride scheduling with Sainte-Laguë start times, so with equal weights the
//! paper's round robin in key order). Unlike the paper, a turn probes one slot rather than
//! taking one, and a backend stops once it holds its quota, the Sainte-Laguë apportionment of
//! `M` slots by weight: shares are as exact as the paper's, and a departing backend's slots
//! disturb the others' walks half as much (the `fill` module says why).

use core::fmt;
use core::net::SocketAddr;
use std::boxed::Box;
use std::collections::HashMap;
use std::vec::Vec;

use permutation::Walk;

mod fill;
mod permutation;

pub use crate::hash::DEFAULT_TABLE_SIZE;

/// Slot value of a table with no backend to choose: the list was empty or all weights zero.
pub const EMPTY: u32 = u32::MAX;

/// Largest table size accepted (64 MiB of slots), so a typo cannot ask for gigabytes.
pub const MAX_TABLE_SIZE: u32 = 1 << 24;

/// A backend's stable identity; its bytes, not its position in a list, decide its slots.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendKey(Box<[u8]>);

impl BackendKey {
    /// A key from arbitrary bytes chosen by the caller.
    pub fn new(bytes: impl Into<Box<[u8]>>) -> Self {
        Self(bytes.into())
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<SocketAddr> for BackendKey {
    /// Address octets then the port, big-endian: 6 bytes for IPv4, 18 for IPv6. Part of the
    /// contract, since the key decides the backend's slots.
    fn from(addr: SocketAddr) -> Self {
        let mut bytes = match addr {
            SocketAddr::V4(a) => a.ip().octets().to_vec(),
            SocketAddr::V6(a) => a.ip().octets().to_vec(),
        };
        bytes.extend_from_slice(&addr.port().to_be_bytes());
        Self(bytes.into())
    }
}

impl fmt::Debug for BackendKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BackendKey({self})")
    }
}

impl fmt::Display for BackendKey {
    /// Lowercase hex of the key's bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// One backend of a table: its identity and its relative weight (0 takes no slots).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaglevBackend {
    /// Stable identity of the backend.
    pub key: BackendKey,
    /// Relative share of the slots.
    pub weight: u32,
}

/// Why a table could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MaglevError {
    /// Maglev's permutations only cover every slot when the size is prime.
    TableSizeNotPrime { table_size: u32 },
    /// The size is above [`MAX_TABLE_SIZE`].
    TableTooLarge { table_size: u32 },
    /// There must be fewer backends than slots (and in practice far fewer).
    TooManyBackends { backends: usize, table_size: u32 },
    /// Two backends share a key, so their slots could not be told apart.
    DuplicateKey {
        key: BackendKey,
        first: usize,
        second: usize,
    },
}

impl fmt::Display for MaglevError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TableSizeNotPrime { table_size } => {
                write!(
                    f,
                    "Maglev table size {table_size} is not prime; use a prime such as {DEFAULT_TABLE_SIZE}"
                )
            }
            Self::TableTooLarge { table_size } => {
                write!(
                    f,
                    "Maglev table size {table_size} is above the maximum of {MAX_TABLE_SIZE}"
                )
            }
            Self::TooManyBackends {
                backends,
                table_size,
            } => write!(
                f,
                "{backends} backends do not fit a Maglev table of {table_size} slots; \
                 use a prime table size well above the number of backends"
            ),
            Self::DuplicateKey { key, first, second } => {
                write!(f, "backends {first} and {second} have the same key {key}")
            }
        }
    }
}

impl std::error::Error for MaglevError {}

/// A Maglev lookup table: for each slot, the index of its backend in the caller's list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaglevTable {
    /// Caller indices, or [`EMPTY`].
    slots: Vec<u32>,
    /// The backends' keys in the caller's order, to compare tables by identity.
    keys: Vec<BackendKey>,
}

impl MaglevTable {
    /// Builds the table of `table_size` slots for `backends`, with `seed` shuffling every
    /// backend's preferences (all instances sharing traffic must use the same seed).
    ///
    /// The result depends on the set of (key, weight) pairs, not on their order; slots hold
    /// indices into `backends`. An empty list, or all weights zero, gives a table of [`EMPTY`].
    pub fn build(
        backends: &[MaglevBackend],
        table_size: u32,
        seed: u32,
    ) -> Result<Self, MaglevError> {
        validate_size(backends.len(), table_size)?;
        let ranked = rank_by_key(backends)?;
        let mut slots = std::vec![EMPTY; table_size as usize];
        let weights: Vec<u32> = ranked.iter().map(|&i| backends[i].weight).collect();
        let walks: Vec<Walk> = ranked
            .iter()
            .map(|&i| Walk::new(backends[i].key.as_bytes(), table_size, seed))
            .collect();
        fill::fill(&mut slots, &weights, &walks);

        // Rank < backends.len() < m <= MAX_TABLE_SIZE, so no index collides with EMPTY.
        for slot in slots.iter_mut().filter(|s| **s != EMPTY) {
            *slot = ranked[*slot as usize] as u32;
        }
        let keys = backends.iter().map(|b| b.key.clone()).collect();
        Ok(Self { slots, keys })
    }

    /// Each slot's backend index in the caller's list, or [`EMPTY`].
    pub fn slots(&self) -> &[u32] {
        &self.slots
    }

    /// Number of slots.
    pub fn table_size(&self) -> u32 {
        self.slots.len() as u32
    }

    /// The key of the backend owning `slot`, if the slot exists and is not [`EMPTY`].
    pub fn owner(&self, slot: usize) -> Option<&BackendKey> {
        let index = *self.slots.get(slot)?;
        self.keys.get(index as usize)
    }

    /// How many slots each backend owns, in the caller's order.
    pub fn slot_counts(&self) -> Vec<u32> {
        let mut counts = std::vec![0u32; self.keys.len()];
        for &index in &self.slots {
            if let Some(count) = counts.get_mut(index as usize) {
                *count += 1;
            }
        }
        counts
    }

    /// Slots whose owner differs between `self` and `other`, compared by backend key, so the two
    /// backend lists may differ in content and order. Tables of different sizes differ in
    /// every slot beyond the shorter one. This is the set of map entries to rewrite.
    pub fn changed_slots<'a>(&'a self, other: &'a MaglevTable) -> impl Iterator<Item = usize> + 'a {
        // Translate self's indices into other's once, so each slot is one integer compare.
        let other_index: HashMap<&BackendKey, u32> = other
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k, i as u32))
            .collect();
        // `None` marks a key other lacks, which must differ even from an EMPTY slot there.
        let translate: Vec<Option<u32>> = self
            .keys
            .iter()
            .map(|k| other_index.get(k).copied())
            .collect();
        let in_other = move |a: u32| match a {
            EMPTY => Some(EMPTY),
            a => translate.get(a as usize).copied().flatten(),
        };
        let longest = self.slots.len().max(other.slots.len());
        (0..longest).filter(move |&s| match (self.slots.get(s), other.slots.get(s)) {
            (Some(&a), Some(&b)) => in_other(a) != Some(b),
            _ => true,
        })
    }
}

/// Number of slots whose owning backend (by key) differs between `a` and `b`.
pub fn slots_changed(a: &MaglevTable, b: &MaglevTable) -> usize {
    a.changed_slots(b).count()
}

/// Whether `n` is prime (trial division; at most about 22,000 steps for a `u32`).
pub fn is_prime(n: u32) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) || n.is_multiple_of(3) {
        return false;
    }
    let n = u64::from(n);
    let mut d = 5u64;
    while d * d <= n {
        if n.is_multiple_of(d) || n.is_multiple_of(d + 2) {
            return false;
        }
        d += 6;
    }
    true
}

fn validate_size(backends: usize, table_size: u32) -> Result<(), MaglevError> {
    if table_size > MAX_TABLE_SIZE {
        return Err(MaglevError::TableTooLarge { table_size });
    }
    if !is_prime(table_size) {
        return Err(MaglevError::TableSizeNotPrime { table_size });
    }
    if backends >= table_size as usize {
        return Err(MaglevError::TooManyBackends {
            backends,
            table_size,
        });
    }
    Ok(())
}

/// Caller indices sorted by key: the fill order, so input order cannot matter.
fn rank_by_key(backends: &[MaglevBackend]) -> Result<Vec<usize>, MaglevError> {
    let mut ranked: Vec<usize> = (0..backends.len()).collect();
    ranked.sort_unstable_by(|&a, &b| backends[a].key.cmp(&backends[b].key).then(a.cmp(&b)));
    if let Some(pair) = ranked
        .windows(2)
        .find(|w| backends[w[0]].key == backends[w[1]].key)
    {
        return Err(MaglevError::DuplicateKey {
            key: backends[pair[0]].key.clone(),
            first: pair[0],
            second: pair[1],
        });
    }
    Ok(ranked)
}

#[cfg(test)]
mod tests;
