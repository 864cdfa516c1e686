//! Properties of Maglev tables: shares follow weights, removing a backend disturbs little,
//! and the table depends only on the set of backends.
#![cfg(feature = "user")]

use core::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use lb_common::maglev::{
    BackendKey, DEFAULT_TABLE_SIZE, EMPTY, MaglevBackend, MaglevTable, slots_changed,
};
use proptest::prelude::*;

const M: u32 = DEFAULT_TABLE_SIZE;

/// `n` distinct backends at addresses derived from `salt`, all of weight `weight`.
fn backends(n: usize, salt: u32, weight: u32) -> Vec<MaglevBackend> {
    (0..n as u32)
        .map(|i| MaglevBackend {
            key: key(salt.wrapping_add(i)),
            weight,
        })
        .collect()
}

fn key(i: u32) -> BackendKey {
    let ip = Ipv4Addr::from(0x0a00_0000 | (i & 0x00ff_ffff));
    BackendKey::from(SocketAddr::V4(SocketAddrV4::new(
        ip,
        8000 + (i >> 24) as u16,
    )))
}

fn build(list: &[MaglevBackend], seed: u32) -> MaglevTable {
    match MaglevTable::build(list, M, seed) {
        Ok(table) => table,
        Err(e) => panic!("building a table of {} backends: {e}", list.len()),
    }
}

/// The owner of every slot, by key.
fn owners(table: &MaglevTable) -> Vec<Option<&BackendKey>> {
    (0..table.slots().len()).map(|s| table.owner(s)).collect()
}

/// Checks each backend's share of slots is within 1% of its share of the weight.
fn assert_shares_follow_weights(list: &[MaglevBackend], table: &MaglevTable) {
    let total: u64 = list.iter().map(|b| u64::from(b.weight)).sum();
    for (b, count) in list.iter().zip(table.slot_counts()) {
        let want = b.weight as f64 / total as f64;
        let got = f64::from(count) / f64::from(M);
        assert!(
            (got - want).abs() <= 0.01,
            "{:?} weight {}: share {got}, want {want}",
            b.key,
            b.weight
        );
    }
    assert!(table.slots().iter().all(|&s| s != EMPTY));
}

/// Slack over the ideal disruption when one backend leaves, as a fraction of the table.
///
/// The spec allows the removed backend's share plus 1% of the table. Maglev is not perfectly
/// minimal: other backends' walks shift when the removed one's slots are free. Measured with
/// `disruption_figures` (M = 65537, 1,900 random removals per kind), the excess over the
/// removed share is:
///
/// | N          | equal weights: median, worst | weights 1..=10: median, worst |
/// |------------|------------------------------|-------------------------------|
/// | 2..=20     | 0.20%, 0.36%                 | 0.17%, 0.37%                  |
/// | 21..=100   | 0.29%, 0.36%                 | 0.27%, 0.45%                  |
/// | 101..=250  | 0.33%, 0.40%                 | 0.30%, 0.48%                  |
/// | 251..=550  | 0.40%, 0.49%                 | 0.37%, 0.56%                  |
/// | 551..=1000 | 0.37%, 0.45%                 | 0.36%, 0.60%                  |
///
/// A further 3,000 removals with N in 2..=20 and 800 with N in 2..=1000, equal weights, peaked
/// at 0.41% and 0.48%. The paper's fill (one slot taken per turn, `offset + skip * j` walks)
/// measured a median of 0.9% and a worst of 1.22% for N in 250..550, and up to 1.4% for N
/// below 20 when two skips were small multiples of each other; see `maglev/fill.rs` and
/// `maglev/permutation.rs` for what changed.
const EQUAL_WEIGHT_SLACK: f64 = 0.01;
const WEIGHTED_SLACK: f64 = 0.01;

/// Removes backend `victim`, checks at most its share of the slots plus `slack` move and that
/// all of its slots go to others, then checks adding it back restores the table.
fn assert_removal_is_minimal(list: &[MaglevBackend], victim: usize, seed: u32, slack: f64) {
    let n = list.len();
    let before = build(list, seed);
    let mut rest = list.to_vec();
    let removed = rest.remove(victim);
    let after = build(&rest, seed);

    let changed = slots_changed(&before, &after);
    let total: u64 = list.iter().map(|b| u64::from(b.weight)).sum();
    let share = removed.weight as f64 / total as f64;
    let bound = (share + slack) * f64::from(M);
    assert!(
        changed as f64 <= bound,
        "n={n}: {changed} slots changed, bound {bound}"
    );
    for slot in 0..M as usize {
        if before.owner(slot) == Some(&removed.key) {
            let now = after.owner(slot);
            assert!(now.is_some() && now != Some(&removed.key), "slot {slot}");
        }
    }

    // Adding it back, even at the end of the list, restores the old table by identity.
    rest.push(removed);
    let restored = build(&rest, seed);
    assert_eq!(slots_changed(&before, &restored), 0);
    assert_eq!(owners(&before), owners(&restored));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn shares_follow_weights(
        weights in prop::collection::vec(1u32..=10, 2..=50),
        salt: u32,
        seed: u32,
    ) {
        let list: Vec<MaglevBackend> = weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| MaglevBackend { key: key(salt.wrapping_add(i as u32)), weight })
            .collect();
        assert_shares_follow_weights(&list, &build(&list, seed));
    }

    #[test]
    fn shuffled_input_gives_the_same_table(
        (list, shuffled) in prop::collection::vec(0u32..=10, 1..=200)
            .prop_map(|weights| weights
                .iter()
                .enumerate()
                .map(|(i, &weight)| MaglevBackend { key: key(i as u32 * 7919), weight })
                .collect::<Vec<_>>())
            .prop_flat_map(|list| (Just(list.clone()), Just(list).prop_shuffle())),
        seed: u32,
    ) {
        let a = build(&list, seed);
        let b = build(&shuffled, seed);
        prop_assert_eq!(owners(&a), owners(&b));
        prop_assert_eq!(slots_changed(&a, &b), 0);
        prop_assert_eq!(a, build(&list, seed));
    }
}

proptest! {
    // Three builds of a 65537-slot table per case: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn removing_a_backend_moves_few_slots(
        (n, victim) in (2usize..=1000).prop_flat_map(|n| (Just(n), 0..n)),
        salt: u32,
        seed: u32,
    ) {
        assert_removal_is_minimal(&backends(n, salt, 1), victim, seed, EQUAL_WEIGHT_SLACK);
    }

    #[test]
    fn removing_a_weighted_backend_moves_few_slots(
        (weights, victim) in prop::collection::vec(1u32..=10, 2..=1000)
            .prop_flat_map(|w| { let n = w.len(); (Just(w), 0..n) }),
        salt: u32,
        seed: u32,
    ) {
        let list: Vec<MaglevBackend> = weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| MaglevBackend { key: key(salt.wrapping_add(i as u32)), weight })
            .collect();
        assert_removal_is_minimal(&list, victim, seed, WEIGHTED_SLACK);
    }
}

#[test]
fn two_backends() {
    let list = backends(2, 0, 1);
    assert_shares_follow_weights(&list, &build(&list, 0));
    assert_removal_is_minimal(&list, 0, 0, EQUAL_WEIGHT_SLACK);
    assert_removal_is_minimal(&list, 1, 0, EQUAL_WEIGHT_SLACK);
}

#[test]
fn a_thousand_backends() {
    let list = backends(1000, 12345, 1);
    let table = build(&list, 3);
    assert_shares_follow_weights(&list, &table);
    // Equal weights: every backend gets floor or ceil of M / N slots.
    let counts = table.slot_counts();
    assert!(counts.iter().all(|&c| c == M / 1000 || c == M / 1000 + 1));
    for victim in [0, 499, 999] {
        assert_removal_is_minimal(&list, victim, 3, EQUAL_WEIGHT_SLACK);
    }
}

#[test]
fn ten_thousand_backends() {
    let list = backends(10_000, 7, 1);
    let table = build(&list, 0);
    let counts = table.slot_counts();
    assert!(
        counts
            .iter()
            .all(|&c| c == M / 10_000 || c == M / 10_000 + 1)
    );
}

#[test]
fn a_single_backend_owns_every_slot() {
    let list = backends(1, 0, 5);
    let table = build(&list, 0);
    assert!(table.slots().iter().all(|&s| s == 0));
    assert_eq!(table.slot_counts(), [M]);
    let empty = build(&[], 0);
    assert_eq!(slots_changed(&table, &empty), M as usize);
}

#[test]
fn an_empty_list_gives_an_empty_table() {
    let table = build(&[], 0);
    assert_eq!(table.table_size(), M);
    assert!(table.slots().iter().all(|&s| s == EMPTY));
    assert_eq!(table.owner(0), None);
}

#[test]
fn equal_weights_of_any_size_match_unweighted() {
    // Only the ratios matter, so weight 7 everywhere is the paper's unweighted Maglev.
    let ones = backends(37, 99, 1);
    let sevens = backends(37, 99, 7);
    assert_eq!(build(&ones, 1).slots(), build(&sevens, 1).slots());
    let counts = build(&sevens, 1).slot_counts();
    assert!(counts.iter().all(|&c| c == M / 37 || c == M / 37 + 1));
}

#[test]
fn extreme_weights() {
    // One heavy backend among light ones: no overflow, shares still follow weights.
    let mut list = backends(100, 5, 1);
    list[42].weight = u32::MAX;
    let table = build(&list, 0);
    let counts = table.slot_counts();
    assert_eq!(counts[42], M);
    list[42].weight = 1000;
    assert_shares_follow_weights(&list, &build(&list, 0));
}

/// Extra disruption beyond the removed backend's share, as a fraction of the table.
fn extra_disruption(list: &[MaglevBackend], victim: usize, seed: u32) -> f64 {
    let before = build(list, seed);
    let mut rest = list.to_vec();
    let removed = rest.remove(victim);
    let after = build(&rest, seed);
    let total: u64 = list.iter().map(|b| u64::from(b.weight)).sum();
    let share = removed.weight as f64 / total as f64;
    slots_changed(&before, &after) as f64 / f64::from(M) - share
}

/// Reproduces the figures quoted above (a minute or two in release):
/// `cargo test -p lb-common --features user --release --test maglev_props -- --ignored --nocapture`
#[test]
#[ignore = "measurement, not a check"]
fn disruption_figures() {
    let mut rng = proptest::test_runner::TestRng::deterministic_rng(
        proptest::test_runner::RngAlgorithm::ChaCha,
    );
    let mut draw = |n: u32| rand_below(&mut rng, n);
    for (lo, hi, trials) in [
        (2, 20, 300),
        (21, 100, 300),
        (101, 250, 300),
        (251, 550, 600),
        (551, 1000, 400),
    ] {
        let mut equal = Vec::new();
        let mut weighted = Vec::new();
        for _ in 0..trials {
            let n: usize = lo + draw((hi - lo + 1) as u32) as usize;
            let (salt, seed) = (draw(u32::MAX), draw(u32::MAX));
            let victim = draw(n as u32) as usize;
            equal.push(extra_disruption(&backends(n, salt, 1), victim, seed));
            let list: Vec<MaglevBackend> = (0..n as u32)
                .map(|i| MaglevBackend {
                    key: key(salt.wrapping_add(i)),
                    weight: 1 + draw(10),
                })
                .collect();
            weighted.push(extra_disruption(&list, victim, seed));
        }
        for (name, v) in [("equal", &mut equal), ("weights 1..=10", &mut weighted)] {
            v.sort_by(f64::total_cmp);
            println!(
                "N {lo}..={hi}, {name}: {trials} removals, median {:.3}%, worst {:.3}%",
                v[v.len() / 2] * 100.0,
                v[v.len() - 1] * 100.0
            );
        }
    }
}

fn rand_below(rng: &mut proptest::test_runner::TestRng, n: u32) -> u32 {
    (rng.next_u64() % u64::from(n)) as u32
}

/// FNV-1a over the slots' little-endian bytes: a whole table in one number.
fn digest(table: &MaglevTable) -> u64 {
    table
        .slots()
        .iter()
        .flat_map(|s| s.to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

/// Tables as the bench builds them (10.0.0.1:80 upwards, weight 1, seed 0), pinned whole: the
/// table is part of the wire contract, so a faster build must give the same bytes. The digests
/// are those of the build before it ended fills with a sweep (`fill::sweep`).
#[test]
fn table_digests_are_pinned() {
    let pinned = [
        (10, 0xe08b_10ec_233d_0c83u64),
        (100, 0xdfb3_3e29_17c5_86b1),
        (1_000, 0x3de2_266a_7815_1ebb),
        (10_000, 0x7b13_74f1_75a4_394a),
    ];
    for (n, want) in pinned {
        let list: Vec<MaglevBackend> = (0..n)
            .map(|i| MaglevBackend {
                key: BackendKey::from(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(0x0a00_0000 | (i + 1)),
                    80,
                ))),
                weight: 1,
            })
            .collect();
        let got = digest(&build(&list, 0));
        assert_eq!(
            got, want,
            "{n} backends: digest {got:#018x}, pinned {want:#018x}"
        );
    }
}
