use std::collections::HashMap;

use http::HeaderValue;

use super::BackendLoad;
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

/// In-flight counts and latencies for the least_* policies.
struct Load<'a>(&'a [usize], &'a [Option<f64>]);

impl BackendLoad for Load<'_> {
    fn in_flight(&self, i: usize) -> usize {
        self.0[i]
    }
    fn latency(&self, i: usize) -> Option<f64> {
        self.1[i]
    }
}

fn shares(s: &Selector, picks: usize, load: &Load<'_>) -> Vec<usize> {
    let mut counts = vec![0; s.len];
    for _ in 0..picks {
        counts[s.pick(None, Load(load.0, load.1)).expect("pick")] += 1;
    }
    counts
}

#[test]
fn least_request_honours_weights() {
    // Idle: spread by weight.
    let s = Selector::build(&Policy::LeastRequest, &backends(&[1, 3]));
    let idle = shares(&s, 4000, &Load(&[0, 0], &[None, None]));
    assert!((2700..3300).contains(&idle[1]), "{idle:?}");
    // Loaded in proportion to weight, the heavier one is no worse a pick than the lighter.
    let even = shares(&s, 4000, &Load(&[10, 30], &[None, None]));
    assert!((2700..3300).contains(&even[1]), "{even:?}");
    // Loaded beyond its weight's share, the heavier one loses every draw.
    let over = shares(&s, 1000, &Load(&[10, 40], &[None, None]));
    assert_eq!(over, [1000, 0]);
}

#[test]
fn least_response_time_shuns_a_slow_backend() {
    let s = Selector::build(&Policy::LeastResponseTime, &backends(&[1, 1, 1]));
    let slow = [Some(0.200), Some(0.002), Some(0.002)];
    let counts = shares(&s, 3000, &Load(&[0, 0, 0], &slow));
    assert_eq!(counts[0], 0, "{counts:?}");
    // Requests in flight count too: a fast backend with many of them loses to the other.
    // 0.002 s x 51 still beats 0.2 s x 1, and loses to 0.002 s x 1.
    let counts = shares(&s, 3000, &Load(&[0, 50, 0], &slow));
    assert_eq!(counts[0], 0, "{counts:?}");
    assert!((1800..2200).contains(&counts[2]), "{counts:?}");
}

#[test]
fn least_response_time_honours_weights_and_starts_new_backends_fairly() {
    // Weight divides the cost: at the same latency, 3 requests in flight on a backend of
    // weight 3 cost what 1 costs on a backend of weight 1.
    let s = Selector::build(&Policy::LeastResponseTime, &backends(&[1, 3]));
    let same = [Some(0.01), Some(0.01)];
    assert_eq!(shares(&s, 1000, &Load(&[0, 0], &same)), [0, 1000]);
    assert_eq!(shares(&s, 1000, &Load(&[0, 1], &same)), [0, 1000]);
    assert_eq!(shares(&s, 1000, &Load(&[1, 9], &same)), [1000, 0]);
    let tied = shares(&s, 4000, &Load(&[1, 5], &same));
    assert!(
        (2700..3300).contains(&tied[1]),
        "a tie goes by the draw: {tied:?}"
    );
    // A backend without answers yet is costed like the one it is compared with.
    let s = Selector::build(&Policy::LeastResponseTime, &backends(&[1, 1]));
    let fresh = [Some(0.05), None];
    let counts = shares(&s, 4000, &Load(&[0, 0], &fresh));
    assert!((1700..2300).contains(&counts[1]), "fair start: {counts:?}");
    // ... and then by its requests in flight, like any other.
    let counts = shares(&s, 1000, &Load(&[0, 3], &fresh));
    assert_eq!(counts, [1000, 0]);
}

/// Backend 1 at `factor` of its weight, in a slow-start window.
struct Ramping(f64);

impl BackendLoad for Ramping {
    fn in_flight(&self, _i: usize) -> usize {
        0
    }
    fn ramping(&self) -> bool {
        true
    }
    fn weight_factor(&self, i: usize) -> f64 {
        if i == 1 { self.0 } else { 1.0 }
    }
}

#[test]
fn a_ramping_backend_gets_its_scaled_share_under_every_weighted_policy() {
    for policy in [
        Policy::RoundRobin,
        Policy::Weighted,
        Policy::Random,
        Policy::LeastRequest,
        Policy::LeastResponseTime,
    ] {
        let s = Selector::build(&policy, &backends(&[1, 1]));
        let share = |factor: f64| {
            let picks = 20_000;
            let hits = (0..picks)
                .filter(|_| s.pick(None, Ramping(factor)) == Some(1))
                .count();
            hits as f64 / picks as f64
        };
        let (early, late) = (share(0.1), share(1.0));
        // Weight 0.1 against 1 is a share of 1/11 for the random draws; least_request
        // with equal loads keeps the first drawn, so the same. least_response_time divides
        // its cost by the scaled weight, so an idle rival always wins over the ramping one.
        let floor = if policy == Policy::LeastResponseTime {
            0.0
        } else {
            0.06
        };
        assert!((floor..0.13).contains(&early), "{policy:?}: {early}");
        assert!((0.45..0.55).contains(&late), "{policy:?}: {late}");
    }
}

#[test]
fn maglev_ignores_slow_start() {
    let s = Selector::build(
        &Policy::Maglev {
            hash_on: Some(HashOn::ClientAddress),
        },
        &backends(&[1, 1]),
    );
    let first = s.pick(Some(7), |_| 0);
    for _ in 0..10 {
        assert_eq!(s.pick(Some(7), Ramping(0.1)), first);
    }
}
