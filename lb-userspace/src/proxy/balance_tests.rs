use std::collections::HashMap;

use http::HeaderValue;

use super::*;

fn backends(weights: &[u16]) -> Vec<(SocketAddr, u16)> {
    weights
        .iter()
        .enumerate()
        .map(|(i, w)| (SocketAddr::from(([10, 0, 0, i as u8 + 1], 80)), *w))
        .collect()
}

fn spread(selector: &Selector, picks: usize, hash: impl Fn(usize) -> Option<u32>) -> Vec<usize> {
    let mut counts = vec![0; selector.len];
    for i in 0..picks {
        let b = selector.pick(hash(i), |_| 0).expect("a backend");
        counts[b] += 1;
    }
    counts
}

#[test]
fn round_robin_takes_turns() {
    let s = Selector::build(&Policy::RoundRobin, &backends(&[1, 5, 1]));
    let picks: Vec<_> = (0..6).map(|_| s.pick(None, |_| 0)).collect();
    assert_eq!(picks, [0, 1, 2, 0, 1, 2].map(Some));
}

#[test]
fn smooth_weighted_matches_nginx() {
    // nginx's documented example: weights 5, 1, 1 give a a b a c a a, not a a a a a b c.
    assert_eq!(
        smooth_weighted_sequence([5, 1, 1].into_iter()),
        [0, 0, 1, 0, 2, 0, 0]
    );
    assert_eq!(smooth_weighted_sequence([2, 4].into_iter()), [1, 0, 1]);
    let s = Selector::build(&Policy::Weighted, &backends(&[3, 1]));
    assert_eq!(spread(&s, 400, |_| None), [300, 100]);
}

#[test]
fn smooth_weighted_scales_huge_sums() {
    let weights = [10_000u16; 20];
    let seq = smooth_weighted_sequence(weights.iter().copied());
    assert_eq!(seq.len(), 20, "equal weights reduce by their gcd");
    let seq = smooth_weighted_sequence((0..20).map(|i| 9_000 + i));
    assert!(seq.len() as u64 <= MAX_SEQUENCE);
    let mut counts = [0usize; 20];
    seq.iter().for_each(|b| counts[*b as usize] += 1);
    assert!(counts.iter().all(|c| *c > 0));
}

#[test]
fn random_spreads_over_all() {
    let s = Selector::build(&Policy::Random, &backends(&[1, 1, 1, 1]));
    let counts = spread(&s, 4000, |_| None);
    assert!(counts.iter().all(|c| (700..1300).contains(c)), "{counts:?}");
}

#[test]
fn least_request_prefers_the_less_loaded() {
    let s = Selector::build(&Policy::LeastRequest, &backends(&[1, 1, 1]));
    let load = [50, 0, 50];
    let mut counts = [0; 3];
    for _ in 0..3000 {
        counts[s.pick(None, |i| load[i]).expect("pick")] += 1;
    }
    // Backend 1 wins every draw it is part of: 2/3 of them.
    assert!((1800..2200).contains(&counts[1]), "{counts:?}");
    // Two distinct choices: a loaded backend is never picked over an idle one.
    let s = Selector::build(&Policy::LeastRequest, &backends(&[1, 1]));
    for _ in 0..100 {
        assert_eq!(s.pick(None, |i| [9, 0][i]), Some(1));
    }
}

#[test]
fn maglev_is_sticky_per_key_and_spreads_keys() {
    let policy = Policy::Maglev {
        hash_on: Some(HashOn::Header("x-user".into())),
    };
    let s = Selector::build(&policy, &backends(&[1, 1, 1]));
    let mut owner = HashMap::new();
    for user in 0..3000 {
        let h = hash_bytes(format!("user-{user}").as_bytes());
        let first = s.pick(Some(h), |_| 0);
        assert_eq!(first, s.pick(Some(h), |_| 0), "same key, same backend");
        *owner.entry(first).or_insert(0) += 1;
    }
    assert_eq!(owner.len(), 3);
    assert!(owner.values().all(|c| (800..1200).contains(c)), "{owner:?}");
}

#[test]
fn maglev_keeps_most_keys_when_a_backend_leaves() {
    let policy = Policy::Maglev {
        hash_on: Some(HashOn::ClientAddress),
    };
    let all = backends(&[1, 1, 1, 1]);
    let before = Selector::build(&policy, &all);
    let after = Selector::build(&policy, &all[..3]);
    let mut moved = 0;
    for key in 0..2000u32 {
        let h = hash_bytes(&key.to_le_bytes());
        let b = before.pick(Some(h), |_| 0).expect("pick");
        let a = after.pick(Some(h), |_| 0).expect("pick");
        if b != 3 && a != b {
            moved += 1;
        }
    }
    assert!(moved < 200, "{moved} keys moved off surviving backends");
}

#[test]
fn request_hash_reads_header_cookie_and_address() {
    let mut headers = HeaderMap::new();
    headers.insert("x-user", HeaderValue::from_static("alice"));
    headers.append(COOKIE, HeaderValue::from_static("a=1; sid=xyz"));
    let client: IpAddr = [192, 0, 2, 1].into();
    let header = request_hash(&HashOn::Header("x-user".into()), &headers, client);
    assert_eq!(header, Some(hash_bytes(b"alice")));
    let cookie = request_hash(&HashOn::Cookie("sid".into()), &headers, client);
    assert_eq!(cookie, Some(hash_bytes(b"xyz")));
    assert_eq!(
        request_hash(&HashOn::Cookie("nope".into()), &headers, client),
        None
    );
    let a = request_hash(&HashOn::ClientAddress, &headers, client);
    let b = request_hash(&HashOn::ClientAddress, &headers, [192, 0, 2, 2].into());
    assert!(a.is_some() && a != b);
}

#[test]
fn empty_and_single_pools() {
    assert_eq!(
        Selector::build(&Policy::Random, &[]).pick(None, |_| 0),
        None
    );
    let one = Selector::build(&Policy::LeastRequest, &backends(&[7]));
    assert_eq!(one.pick(None, |_| 0), Some(0));
}
