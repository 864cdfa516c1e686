use super::permutation::{OFFSET_DOMAIN, SKIP_DOMAIN, key_hash, permutation};
use super::*;
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

fn build(list: &[MaglevBackend], table_size: u32, seed: u32) -> MaglevTable {
    match MaglevTable::build(list, table_size, seed) {
        Ok(table) => table,
        Err(e) => panic!("building a table of {table_size} slots: {e}"),
    }
}

fn backend(key: &[u8], weight: u32) -> MaglevBackend {
    MaglevBackend {
        key: BackendKey::new(key),
        weight,
    }
}

/// FNV-1a over the slots, to pin a whole table in one number.
fn fingerprint(slots: &[u32]) -> u64 {
    slots
        .iter()
        .flat_map(|s| s.to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

#[test]
fn primes() {
    let small: Vec<u32> = (0..40).filter(|&n| is_prime(n)).collect();
    assert_eq!(small, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37]);
    assert!(is_prime(DEFAULT_TABLE_SIZE));
    assert!(is_prime(655_373));
    assert!(is_prime(4_294_967_291)); // largest u32 prime
    assert!(!is_prime(65_536));
    assert!(!is_prime(65_535));
    assert!(!is_prime(u32::MAX));
    assert!(!is_prime(65_521 * 65_519)); // product of two large primes
}

#[test]
fn invalid_inputs_are_errors() {
    let two = [backend(b"a", 1), backend(b"b", 1)];
    assert_eq!(
        MaglevTable::build(&two, 65_536, 0),
        Err(MaglevError::TableSizeNotPrime { table_size: 65_536 })
    );
    assert_eq!(
        MaglevTable::build(&two, 0, 0),
        Err(MaglevError::TableSizeNotPrime { table_size: 0 })
    );
    assert_eq!(
        MaglevTable::build(&two, 4_294_967_291, 0),
        Err(MaglevError::TableTooLarge {
            table_size: 4_294_967_291
        })
    );
    assert_eq!(
        MaglevTable::build(&two, 2, 0),
        Err(MaglevError::TooManyBackends {
            backends: 2,
            table_size: 2
        })
    );
    let dup = [backend(b"a", 1), backend(b"b", 1), backend(b"a", 2)];
    let Err(err) = MaglevTable::build(&dup, 7, 0) else {
        panic!("duplicate keys were accepted");
    };
    assert_eq!(
        err,
        MaglevError::DuplicateKey {
            key: BackendKey::new(*b"a"),
            first: 0,
            second: 2
        }
    );
    assert_eq!(
        std::format!("{err}"),
        "backends 0 and 2 have the same key 61"
    );
}

#[test]
fn smallest_tables_work() {
    let one = [backend(b"only", 1)];
    assert_eq!(
        MaglevTable::build(&one, 2, 0).map(|t| t.slots),
        Ok(std::vec![0, 0])
    );
    let two = [backend(b"a", 1), backend(b"b", 1)];
    let table = build(&two, 3, 9);
    assert_eq!(table.slot_counts().iter().sum::<u32>(), 3);
    assert!(table.slot_counts().iter().all(|&c| c >= 1));
}

#[test]
fn empty_and_weightless_lists_give_empty_tables() {
    for list in [std::vec![], std::vec![backend(b"a", 0), backend(b"b", 0)]] {
        let table = build(&list, 13, 0);
        assert!(table.slots().iter().all(|&s| s == EMPTY));
        assert_eq!(table.owner(0), None);
        assert_eq!(table.table_size(), 13);
    }
}

#[test]
fn zero_weight_backends_change_nothing() {
    let without = [backend(b"a", 1), backend(b"b", 3)];
    let with = [backend(b"a", 1), backend(b"z", 0), backend(b"b", 3)];
    let a = build(&without, 1009, 5);
    let b = build(&with, 1009, 5);
    assert_eq!(slots_changed(&a, &b), 0);
    assert_eq!(b.slot_counts()[1], 0);
}

#[test]
fn socket_addr_keys() {
    let v4 = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 8080));
    assert_eq!(BackendKey::from(v4).as_bytes(), [10, 0, 0, 1, 0x1f, 0x90]);
    let v6 = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 443, 0, 0));
    let key = BackendKey::from(v6);
    assert_eq!(key.as_bytes().len(), 18);
    assert_eq!(
        std::format!("{key}"),
        "0000000000000000000000000000000101bb"
    );
}

#[test]
fn changed_slots_compares_identities_not_indices() {
    let ab = [backend(b"a", 1), backend(b"b", 1)];
    let ba = [backend(b"b", 1), backend(b"a", 1)];
    let x = build(&ab, 101, 0);
    let y = build(&ba, 101, 0);
    assert_ne!(x.slots(), y.slots());
    assert_eq!(slots_changed(&x, &y), 0);
    let smaller = build(&ab, 97, 0);
    assert!(slots_changed(&x, &smaller) >= 4);
}

#[test]
fn golden_permutations() {
    // Part of the wire contract, like the flow hash: do not update these; fix the code.
    assert_eq!(key_hash(b"", 0, OFFSET_DOMAIN), GOLDEN_HASHES[0]);
    assert_eq!(key_hash(b"", 0, SKIP_DOMAIN), GOLDEN_HASHES[1]);
    assert_eq!(
        key_hash(&[10, 0, 0, 1, 0x1f, 0x90], 0, OFFSET_DOMAIN),
        GOLDEN_HASHES[2]
    );
    assert_eq!(
        key_hash(&[10, 0, 0, 1, 0x1f, 0x90], 7, SKIP_DOMAIN),
        GOLDEN_HASHES[3]
    );
    assert_eq!(key_hash(&[0xab; 18], 0, OFFSET_DOMAIN), GOLDEN_HASHES[4]);
    assert_eq!(
        permutation(&[10, 0, 0, 1, 0x1f, 0x90], DEFAULT_TABLE_SIZE, 0),
        GOLDEN_PERM
    );
}

const GOLDEN_HASHES: [u64; 5] = [
    0x1642_bb22_9ca9_565f,
    0xd085_32e1_2690_071a,
    0xe4a5_8d66_867f_9940,
    0x1d7e_f39b_8ffd_7e12,
    0xc7a6_d693_81e7_dec0,
];
const GOLDEN_PERM: (u32, u32) = (48003, 14111);

#[test]
fn golden_tables() {
    let equal: Vec<MaglevBackend> = (1..=3u8)
        .map(|i| backend(&[10, 0, 0, i, 0, 80], 1))
        .collect();
    let table = build(&equal, 13, 0);
    assert_eq!(table.slots(), GOLDEN_SMALL);

    let weighted: Vec<MaglevBackend> = (0..100u32)
        .map(|i| backend(&i.to_be_bytes(), 1 + i % 4))
        .collect();
    let table = build(&weighted, DEFAULT_TABLE_SIZE, 1);
    assert_eq!(fingerprint(table.slots()), GOLDEN_FINGERPRINT);
}

const GOLDEN_SMALL: &[u32] = &[0, 2, 1, 2, 0, 0, 2, 1, 1, 2, 0, 1, 0];
// Changed deliberately when turns became single probes along `offset + skip * j^e` walks (less
// disruption); like the hashes, any other change to these two breaks the wire contract.
const GOLDEN_FINGERPRINT: u64 = 0x9448_64bb_5469_f466;

#[test]
fn weighted_turns_apportion_exactly() {
    // Sainte-Laguë: 1:2:3 of 601 slots is 100.2 : 200.3 : 300.5 -> 100, 200, 301 or so.
    let list = [backend(b"a", 1), backend(b"b", 2), backend(b"c", 3)];
    let counts = build(&list, 601, 0).slot_counts();
    assert_eq!(counts.iter().sum::<u32>(), 601);
    for (count, weight) in counts.iter().zip([1.0, 2.0, 3.0]) {
        assert!(
            (f64::from(*count) - 601.0 * weight / 6.0).abs() <= 1.0,
            "{counts:?}"
        );
    }
}

#[test]
fn weighted_slot_counts_match_the_apportionment() {
    // The fill stops each backend at its quota, so counts are exactly the apportionment,
    // however the probes race.
    let list: Vec<MaglevBackend> = (0..40u32)
        .map(|i| backend(&i.to_be_bytes(), 1 + i % 7))
        .collect();
    let counts = build(&list, 1009, 3).slot_counts();
    let total: u32 = list.iter().map(|b| b.weight).sum();
    assert_eq!(counts.iter().sum::<u32>(), 1009);
    for (b, count) in list.iter().zip(&counts) {
        let ideal = 1009.0 * f64::from(b.weight) / f64::from(total);
        assert!((f64::from(*count) - ideal).abs() < 1.0, "{counts:?}");
    }
}

#[test]
fn spread_is_a_bijection() {
    use super::permutation::Spread;
    for m in [2, 3, 5, 7, 13, 31, 1009, DEFAULT_TABLE_SIZE] {
        let spread = Spread::new(m);
        let mut seen = std::vec![false; m as usize];
        for j in 0..m {
            let p = spread.power(j);
            assert!(p < m && !seen[p as usize], "m={m} j={j}");
            seen[p as usize] = true;
        }
    }
}

#[test]
fn walks_step_by_their_differences() {
    // The fill steps each walk by additions (forward differences of j^e); they must give the
    // slots the walk defines, whatever the exponent (m = 7, 13: e = 5; m = 31: e = 7).
    use super::permutation::{Modulus, Spread, Walk};
    for m in [2, 3, 7, 13, 31, 1031, DEFAULT_TABLE_SIZE] {
        let (spread, modulus) = (Spread::new(m), Modulus::new(m));
        let spread_differences = spread.differences();
        for key in [&b"a"[..], b"backend-2", &[10, 0, 0, 1, 0, 80]] {
            let walk = Walk::new(key, m, 7);
            let (mut slot, differences) = walk.start(&spread_differences, modulus);
            let mut differences: Vec<u32> = differences.collect();
            assert_eq!(differences.len(), spread_differences.len());
            for j in 0..m.min(5000) {
                assert_eq!(slot, walk.slot(spread.power(j), modulus), "m={m} j={j}");
                // Lowest order first, each by the next one's value before it steps.
                slot = (slot + differences[0]) % m;
                for order in 1..differences.len() {
                    differences[order - 1] = (differences[order - 1] + differences[order]) % m;
                }
            }
        }
    }
}

#[test]
fn walks_run_backwards() {
    use super::permutation::{Modulus, Spread, Walk};
    for m in [1031, 7919, DEFAULT_TABLE_SIZE] {
        let (spread, modulus) = (Spread::new(m), Modulus::new(m));
        for key in [&b"a"[..], b"backend-2", &[10, 0, 0, 1, 0, 80]] {
            let walk = Walk::new(key, m, 7);
            let back = walk.inverse(modulus);
            for j in (0..m).step_by(97) {
                let slot = walk.slot(spread.power(j), modulus);
                assert_eq!(spread.root(back.spread_at(slot, modulus)), j, "m={m} j={j}");
            }
        }
    }
}

#[test]
fn modulus_reduces_exactly() {
    use super::permutation::Modulus;
    for m in [2u32, 3, 65_537, 16_777_213] {
        let modulus = Modulus::new(m);
        let edges = [
            0u64,
            1,
            u64::from(m) - 1,
            u64::from(m),
            (1 << 48) + 12_345,
            (1 << 62) - 1,
        ];
        for x in edges
            .into_iter()
            .chain((0..1000u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 2))
        {
            assert_eq!(
                u64::from(modulus.reduce(x)),
                x % u64::from(m),
                "{x} mod {m}"
            );
        }
    }
}

/// `n` IPv4 backends 10.0.0.1:80 onwards, as the bench and a config list them.
fn v4_backends(n: u32, weight: impl Fn(u32) -> u32) -> Vec<MaglevBackend> {
    (0..n)
        .map(|i| MaglevBackend {
            key: BackendKey::from(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(0x0a00_0000 | (i + 1)),
                80,
            ))),
            weight: weight(i),
        })
        .collect()
}

/// Whole tables of the bench's sizes and more, pinned before the build was made faster: any
/// rewrite of `fill` must give these same tables (the kernel, the L7 balancer and maps
/// pinned by a running agent depend on them).
#[test]
fn golden_tables_at_scale() {
    let cases: [(&str, Vec<MaglevBackend>, u32, u32, u64); 12] = [
        (
            "1 equal",
            v4_backends(1, |_| 1),
            DEFAULT_TABLE_SIZE,
            0,
            0x4ebe_9b86_711e_13f5,
        ),
        (
            "2 equal",
            v4_backends(2, |_| 1),
            DEFAULT_TABLE_SIZE,
            0,
            0x80f2_2acc_7989_40a5,
        ),
        (
            "10 equal",
            v4_backends(10, |_| 1),
            DEFAULT_TABLE_SIZE,
            0,
            0xe08b_10ec_233d_0c83,
        ),
        (
            "100 equal",
            v4_backends(100, |_| 1),
            DEFAULT_TABLE_SIZE,
            0,
            0xdfb3_3e29_17c5_86b1,
        ),
        (
            "1000 equal",
            v4_backends(1000, |_| 1),
            DEFAULT_TABLE_SIZE,
            0,
            0x3de2_266a_7815_1ebb,
        ),
        (
            "10000 equal",
            v4_backends(10_000, |_| 1),
            DEFAULT_TABLE_SIZE,
            0,
            0x7b13_74f1_75a4_394a,
        ),
        (
            "3 weighted",
            v4_backends(3, |i| 1 + i % 5),
            DEFAULT_TABLE_SIZE,
            7,
            0x205e_baab_5940_5705,
        ),
        (
            "1000 weighted",
            v4_backends(1000, |i| 1 + i % 5),
            DEFAULT_TABLE_SIZE,
            7,
            0xc2c0_87d2_ef90_d979,
        ),
        (
            "10000 weighted",
            v4_backends(10_000, |i| 1 + i % 5),
            DEFAULT_TABLE_SIZE,
            7,
            0xb701_ed33_5cf4_7af9,
        ),
        (
            "1000 with zero weights, M = 655373",
            v4_backends(1000, |i| if i % 3 == 0 { 0 } else { 1 + i % 2 }),
            655_373,
            42,
            0xd4bd_f7d9_9977_bdc0,
        ),
        (
            "50 equal, M = 1009",
            v4_backends(50, |_| 1),
            1009,
            3,
            0x657e_874d_c469_890d,
        ),
        (
            "50 equal, M = 1031",
            v4_backends(50, |_| 1),
            1031,
            3,
            0xa1fa_c774_d3b7_36fa,
        ),
    ];
    for (name, list, table_size, seed, golden) in cases {
        let table = build(&list, table_size, seed);
        assert_eq!(fingerprint(table.slots()), golden, "{name}");
        let mut reversed = list;
        reversed.reverse();
        let table = build(&reversed, table_size, seed);
        let back: Vec<u32> = table
            .slots()
            .iter()
            .map(|&s| {
                if s == EMPTY {
                    EMPTY
                } else {
                    table.keys.len() as u32 - 1 - s
                }
            })
            .collect();
        assert_eq!(fingerprint(&back), golden, "{name}, input reversed");
    }
}
