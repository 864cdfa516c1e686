//! How the lookup table is filled: turns in virtual time, each turn one probe, up to a quota.
//!
//! Backends of equal weight form a class, whose members act in key order within each of its
//! turns (ties between classes go to the heavier). Two schedules run over the classes:
//!
//! 1. Apportionment: class `w` takes turn `k` at `(2k + 1) / w` and each turn gives every
//!    member one slot, until `M` are given out. Quotas are thus the Sainte-Laguë apportionment
//!    of `M` by weight; equal weights get floor or ceil of `M / N`.
//! 2. Fill: each turn, every member below its quota probes the next slot of its permutation
//!    and takes it if free, stopping at its quota. Class `w` takes turn `k` at about
//!    `-ln(1 - k/M) / w`, so the first of several backends to reach a given slot is backend
//!    `i` with probability `w_i / sum(w)`, as in weighted rendezvous hashing: a departing
//!    backend's slots go to the others in proportion to the quota each gains.
//!
//! The paper instead takes one *slot* per turn, walking past taken slots. When a backend
//! leaves, its slots stay free longer; every later walk that crosses one takes it and shifts
//! the walker's remaining picks a turn earlier, where they take slots others would have had.
//! Late in the fill walks are long, so these chains add up. Probing one slot per turn keeps
//! each backend's walk on a clock the others cannot move, so only quotas couple the walks.
//! With `M = 65537` this more than halves the slots that move beyond the removed backend's
//! own (figures in `tests/maglev_props.rs`). With equal weights the probe clock's shape does
//! not matter: there is one class, probing in lockstep.

use core::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::collections::binary_heap::PeekMut;
use std::vec::Vec;

use super::permutation::{Modulus, Spread, Walk};

/// Fills `slots` (all [`EMPTY`], a prime number of them) with ranks, given each rank's weight
/// and walk. Leaves the table empty if no weight is positive.
pub(super) fn fill(slots: &mut [u32], weights: &[u32], walks: &[Walk]) {
    let m = slots.len() as u32;
    let spread = Spread::new(m);
    let modulus = Modulus::new(m);
    // Which slots are taken, 1 bit each: 8 KiB for M = 65537, which stays in the L1 cache,
    // where the slots themselves (256 KiB) do not. Late in a fill most probes find a taken
    // slot, so most probes read only this.
    let mut taken = std::vec![0u64; (m as usize).div_ceil(64)];
    let classes = classes(weights);
    let left = quotas(&classes, weights.len(), m);
    // Each class's members below their quota, in rank order.
    let spread_differences = spread.differences();
    let mut active: Vec<Probers> = classes
        .iter()
        .map(|c| Probers::new(&c.members, &left, walks, &spread_differences, modulus))
        .collect();
    let mut turns = first_turns(&classes, probe_time_step(m, 0));
    // Quotas sum to `m`, so the table is full exactly when every backend has met its quota.
    // Terminates: after `m` probes a backend has seen every slot, so it has met its quota or
    // every slot is taken.
    let mut unfilled = left.iter().sum::<u32>();
    // rank << 32 | slot of every slot taken by a probe, in the order taken, and one past them the
    // scratch entry of the latest probe that took nothing.
    let mut claims = std::vec![0u64; unfilled as usize + 1];
    let mut claimed = 0;
    while unfilled > 0 {
        let classes_left = turns.len();
        let Some(mut next) = turns.peek_mut() else {
            break; // unreachable: some class still has a backend below its quota
        };
        // Every member of a class has probed exactly `k` times.
        let members = &mut active[next.0.class as usize];
        if turns_left_to_one_class(classes_left, m)
            && members.live() * unfilled as usize <= SWEEP_PAIRS
        {
            write_claims(slots, &claims[..claimed]);
            sweep(
                slots,
                &taken,
                &members.still_probing(walks),
                &spread,
                modulus,
            );
            return;
        }
        unfilled -= members.probe(&mut taken, &mut claims, &mut claimed);
        if members.live() == 0 {
            PeekMut::pop(next);
        } else {
            // Re-sifted when `next` drops.
            next.0.k += 1;
            next.0.time += probe_time_step(m, next.0.k);
        }
    }
    write_claims(slots, &claims[..claimed]);
}

fn write_claims(slots: &mut [u32], claims: &[u64]) {
    for &claim in claims {
        slots[claim as u32 as usize] = (claim >> 32) as u32;
    }
}

/// One class's backends below their quota, as columns (rank order) so that a turn is two
/// tight passes: one probing each member's next slot, one stepping every walk forward.
struct Probers {
    /// Each member's slot at the class's current turn `k`.
    next: Vec<u32>,
    /// Each member's walk's forward differences at `k`, orders 1 to `e - 1` (the `e`-th is
    /// `top`, constant): stepping a walk is `e` modular additions.
    differences: Vec<Vec<u32>>,
    top: Vec<u32>,
    rank: Vec<u32>,
    /// Slots each has yet to take, or [`PARKED`] once at its quota.
    left: Vec<u32>,
    /// Members at their quota, parked in the columns until compacted.
    done: usize,
    /// Scratch: members that reached their quota this turn.
    reached: Vec<usize>,
    /// The table size.
    m: u32,
}

/// `left` of a member parked at its quota.
const PARKED: u32 = u32::MAX;

impl Probers {
    fn new(
        members: &[u32],
        left: &[u32],
        walks: &[Walk],
        spread_differences: &[u32],
        modulus: Modulus,
    ) -> Self {
        let members: Vec<u32> = members
            .iter()
            .copied()
            .filter(|&r| left[r as usize] > 0)
            .collect();
        let orders = spread_differences.len();
        let mut probers = Self {
            next: Vec::with_capacity(members.len()),
            differences: (1..orders)
                .map(|_| Vec::with_capacity(members.len()))
                .collect(),
            top: Vec::with_capacity(members.len()),
            rank: members.clone(),
            left: members.iter().map(|&r| left[r as usize]).collect(),
            done: 0,
            reached: Vec::new(),
            m: modulus.value(),
        };
        for &rank in &members {
            let (slot, mut differences) = walks[rank as usize].start(spread_differences, modulus);
            probers.next.push(slot);
            for column in &mut probers.differences {
                column.push(differences.next().unwrap_or(0));
            }
            probers.top.push(differences.next().unwrap_or(0));
        }
        probers
    }

    /// Members below their quota.
    fn live(&self) -> usize {
        self.rank.len() - self.done
    }

    /// One turn: each member below its quota, in rank order, probes its next slot and takes it
    /// if free, appending it to `claims`; then every walk steps to its next slot. Returns the
    /// slots taken.
    fn probe(&mut self, taken: &mut [u64], claims: &mut [u64], claimed: &mut usize) -> u32 {
        let before = *claimed;
        let n = self.rank.len();
        let (next, left, rank) = (&self.next[..n], &mut self.left[..n], &self.rank[..n]);
        *claimed = probe_each(next, left, rank, taken, claims, before, &mut self.reached);
        // Those that reached their quota are parked on the slot just taken, which every later
        // probe finds taken (so `left` stays PARKED), until the columns are compacted.
        for &i in &self.reached {
            for column in &mut self.differences {
                column[i] = 0;
            }
            self.top[i] = 0;
            self.left[i] = PARKED;
        }
        self.done += self.reached.len();
        self.reached.clear();
        // Lowest order first: each column steps by the next one's value before that steps.
        let m = self.m;
        let (mut column, mut rest) = (&mut self.next, &mut self.differences[..]);
        while let Some((higher, tail)) = rest.split_first_mut() {
            add_mod(column, higher, m);
            (column, rest) = (higher, tail);
        }
        add_mod(column, &self.top, m);
        // Parked members cost a probe each: drop them once they are an eighth.
        if self.done * 8 > self.rank.len() {
            self.compact();
        }
        (*claimed - before) as u32
    }

    /// Drops the members at their quota, keeping the others' order.
    fn compact(&mut self) {
        let keep: Vec<bool> = self.left.iter().map(|&l| l != PARKED).collect();
        let retain = |column: &mut Vec<u32>| {
            let mut flags = keep.iter();
            column.retain(|_| flags.next().copied().unwrap_or(false));
        };
        retain(&mut self.next);
        self.differences.iter_mut().for_each(retain);
        retain(&mut self.top);
        retain(&mut self.rank);
        retain(&mut self.left);
        self.done = 0;
    }

    /// The members below their quota, as [`sweep`] takes them.
    fn still_probing(&self, walks: &[Walk]) -> Vec<Prober> {
        self.rank
            .iter()
            .zip(&self.left)
            .filter(|&(_, &left)| left != PARKED)
            .map(|(&rank, &left)| Prober {
                walk: walks[rank as usize],
                rank,
                left,
            })
            .collect()
    }
}

/// Each member (in rank order) probes its `next` slot and takes it if free, appending
/// `rank << 32 | slot` to `claims` from `claimed` on; pushes the members that reach their
/// quota to `reached`. Returns the new end of `claims`.
///
/// Without branches on whether a slot is free: through most of a fill that is a coin toss,
/// and mispredicting it cost more than the rest of the probe.
fn probe_each(
    next: &[u32],
    left: &mut [u32],
    rank: &[u32],
    taken: &mut [u64],
    claims: &mut [u64],
    mut claimed: usize,
    reached: &mut Vec<usize>,
) -> usize {
    for i in 0..next.len().min(left.len()).min(rank.len()) {
        let slot = next[i] as usize;
        let (word, bit) = (&mut taken[slot / 64], slot % 64);
        let free = (!*word >> bit) as u32 & 1;
        // Taken now either way.
        *word |= 1 << bit;
        // Always written, kept only if taken: a sequential write, where writing the rank to
        // its slot (256 KiB apart) stalled the loop.
        claims[claimed] = u64::from(rank[i]) << 32 | slot as u64;
        // Wrapping ops where nothing can wrap (see `add_mod`).
        claimed = claimed.wrapping_add(free as usize);
        left[i] = left[i].wrapping_sub(free);
        if left[i] == 0 {
            reached.push(i);
        }
    }
    claimed
}

/// `column[i] = (column[i] + step[i]) mod m` for values below `m`. Values are at most 2^24, so
/// sums fit in an `i32`, whose comparison the compiler vectorises with baseline SSE2.
fn add_mod(column: &mut [u32], step: &[u32], m: u32) {
    let m = m as i32;
    for (value, &step) in column.iter_mut().zip(step) {
        // Wrapping ops although nothing wraps: the checked ones of test builds (lb-common is
        // optimised there too, and the bench runs it so) would keep this from vectorising.
        let sum = (*value as i32).wrapping_add(step as i32);
        *value = sum.wrapping_sub(if sum >= m { m } else { 0 }) as u32;
    }
}

/// Most (backend, free slot) pairs [`sweep`] computes. For 1,000 backends and M = 65537 a
/// quarter of all probes come after the last 64 free slots, but each pair costs a modular
/// power (several probes' time): measured, 2,048 beat 512, 8,192 and 32,768.
const SWEEP_PAIRS: usize = 2048;

/// Whether the fill may end with [`sweep`]: one class left (so turns go by probe count, then
/// rank) and a table large enough that the inverse walk is cheaper than probing.
fn turns_left_to_one_class(classes: usize, m: u32) -> bool {
    classes == 1 && m >= 1024
}

/// Ends a fill whose remaining backends (`members`, one class, in rank order, each having
/// probed `k` times) all take their turns in lockstep: instead of probing until every free slot
/// is found, finds for each backend and each free slot the turn at which the backend's walk
/// reaches it, and replays those hits in turn order, then rank, exactly as probing would.
///
/// Exact because slots are never freed: a slot free now was never probed by a backend still
/// below its quota (it would have taken it), so each such turn is still to come, and every
/// probe between two of them would find a taken slot.
fn sweep(slots: &mut [u32], taken: &[u64], members: &[Prober], spread: &Spread, m: Modulus) {
    let free: Vec<u32> = (0..slots.len() as u32)
        .filter(|&s| taken[s as usize / 64] & (1 << (s % 64)) == 0)
        .collect();
    // (turn << 32 | position in `members`, slot), in the order probing would reach them.
    let mut hits: Vec<(u64, u32)> = Vec::with_capacity(members.len() * free.len());
    for (position, member) in members.iter().enumerate() {
        let walk = member.walk.inverse(m);
        hits.extend(free.iter().map(|&slot| {
            let turn = spread.root(walk.spread_at(slot, m));
            ((u64::from(turn) << 32) | position as u64, slot)
        }));
    }
    hits.sort_unstable();
    let mut left: Vec<u32> = members.iter().map(|p| p.left).collect();
    let mut taken = taken.to_vec();
    for (key, slot) in hits {
        let position = (key & u64::from(u32::MAX)) as usize;
        let (word, bit) = (&mut taken[slot as usize / 64], 1u64 << (slot % 64));
        if left[position] > 0 && *word & bit == 0 {
            *word |= bit;
            slots[slot as usize] = members[position].rank;
            left[position] -= 1;
        }
    }
}

/// A backend still below its quota.
#[derive(Clone, Copy)]
struct Prober {
    walk: Walk,
    rank: u32,
    /// Slots it has yet to take.
    left: u32,
}

/// Backends of one positive weight, in rank (key) order.
struct Class {
    weight: u32,
    members: Vec<u32>,
}

/// Classes of the positive weights, heaviest first.
fn classes(weights: &[u32]) -> Vec<Class> {
    let mut ranks: Vec<u32> = (0..weights.len() as u32)
        .filter(|&r| weights[r as usize] > 0)
        .collect();
    // Stable, so members stay in rank order.
    ranks.sort_by_key(|&r| Reverse(weights[r as usize]));
    ranks
        .chunk_by(|&a, &b| weights[a as usize] == weights[b as usize])
        .map(|members| Class {
            weight: weights[members[0] as usize],
            members: members.to_vec(),
        })
        .collect()
}

/// Each rank's Sainte-Laguë share of `m` slots: whole turns of its class, plus one for the
/// first members of the turn that runs out of slots.
fn quotas(classes: &[Class], n: usize, m: u32) -> Vec<u32> {
    let mut whole = std::vec![0u32; classes.len()];
    let mut quotas = std::vec![0u32; n];
    let mut remaining = m;
    let mut turns = first_turns(classes, 1);
    // Each turn hands out at least one slot, so this runs at most `m` times.
    while remaining > 0 {
        let Some(mut next) = turns.peek_mut() else {
            break; // no positive weight
        };
        let class = next.0.class as usize;
        let members = &classes[class].members;
        match u32::try_from(members.len()) {
            Ok(size) if size <= remaining => {
                whole[class] += 1;
                remaining -= size;
                next.0.time += 2;
            }
            _ => {
                for &rank in &members[..remaining as usize] {
                    quotas[rank as usize] = 1;
                }
                remaining = 0;
            }
        }
    }
    for (class, turns) in classes.iter().zip(whole) {
        for &rank in &class.members {
            quotas[rank as usize] += turns;
        }
    }
    quotas
}

fn first_turns(classes: &[Class], time: u64) -> BinaryHeap<Reverse<Turn>> {
    (0..classes.len() as u32)
        .map(|class| {
            Reverse(Turn {
                time,
                k: 0,
                weight: classes[class as usize].weight,
                class,
            })
        })
        .collect()
}

/// Increment of the probe clock for turn `k`: `2^40 / (m - k)`, so turn `k` comes at
/// `2^40 * (H(m) - H(m - k - 1))`, about `-2^40 * ln(1 - k/m)`. Integer arithmetic keeps
/// tables identical on every machine. A member probes at most `m` times, so `k < m`; the
/// clamp only keeps the division defined.
fn probe_time_step(m: u32, k: u32) -> u64 {
    (1u64 << 40) / u64::from(m.saturating_sub(k).max(1))
}

/// A class's next turn, at virtual time `time / weight`; earlier turns order first.
#[derive(Clone, Copy, Debug)]
struct Turn {
    time: u64,
    /// Turns taken so far; only the probe clock needs it.
    k: u32,
    weight: u32,
    class: u32,
}

impl Ord for Turn {
    fn cmp(&self, other: &Self) -> Ordering {
        // t_a / w_a vs t_b / w_b, cross-multiplied exactly: t < 2^45 (at most 2^40 times
        // H(2^24) for the probe clock), so each product fits. Classes have distinct weights, so
        // the tie-break is total.
        let lhs = u128::from(self.time) * u128::from(other.weight);
        let rhs = u128::from(other.time) * u128::from(self.weight);
        lhs.cmp(&rhs).then(other.weight.cmp(&self.weight))
    }
}

impl PartialOrd for Turn {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Turn {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Turn {}
