//! Load-balancing policies over a pool's usable backends. A [`Selector`] is built once per
//! backend set (Maglev table, smooth weighted sequence) and picks lock-free per request.
//! Pure: backends are indices, in-flight counts and latencies come from the caller
//! ([`BackendLoad`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use http::HeaderMap;
use http::header::COOKIE;
use lb_common::hash::{FlowHashInput, flow_hash, maglev_slot};
use lb_common::maglev::{BackendKey, EMPTY, MaglevBackend, MaglevTable};

use crate::config::{HashOn, Policy};

/// Longest smooth-weighted sequence kept; larger weight sums are scaled down to fit.
const MAX_SEQUENCE: u64 = 1 << 16;

/// Slots of an l7 Maglev table: the same prime as the kernel's default.
const MAGLEV_TABLE_SIZE: u32 = lb_common::maglev::DEFAULT_TABLE_SIZE;

/// Picks a backend index for each request.
#[derive(Debug)]
pub struct Selector {
    len: usize,
    kind: Kind,
    /// Each backend's weight as its policy sees it (1 for the unweighted ones), scaled by
    /// slow start while a backend ramps.
    base_weights: Vec<f64>,
}

#[derive(Debug)]
enum Kind {
    RoundRobin(AtomicUsize),
    Weighted {
        sequence: Vec<u32>,
        next: AtomicUsize,
    },
    LeastRequest(TwoChoices),
    LeastResponseTime(TwoChoices),
    Random,
    Maglev {
        slots: Vec<u32>,
        hash_on: HashOn,
    },
}

impl Selector {
    /// A selector over `backends` (address and weight, in the caller's order).
    pub fn build(policy: &Policy, backends: &[(SocketAddr, u16)]) -> Self {
        let kind = match policy {
            Policy::RoundRobin => Kind::RoundRobin(AtomicUsize::new(0)),
            Policy::Weighted => Kind::Weighted {
                sequence: smooth_weighted_sequence(backends.iter().map(|(_, w)| *w)),
                next: AtomicUsize::new(0),
            },
            Policy::LeastRequest => Kind::LeastRequest(TwoChoices::new(backends)),
            Policy::LeastResponseTime => Kind::LeastResponseTime(TwoChoices::new(backends)),
            Policy::Random => Kind::Random,
            Policy::Maglev { hash_on } => {
                let input: Vec<MaglevBackend> = backends
                    .iter()
                    .map(|(addr, weight)| MaglevBackend {
                        key: BackendKey::from(*addr),
                        weight: u32::from(*weight),
                    })
                    .collect();
                // Keys are unique (validated) and the size is a prime far above any pool,
                // so building cannot fail; an empty table sends everything to random.
                let slots = MaglevTable::build(&input, MAGLEV_TABLE_SIZE, 0)
                    .map(|t| t.slots().to_vec())
                    .unwrap_or_default();
                Kind::Maglev {
                    slots,
                    // Validation requires hash_on for pools an l7 route uses.
                    hash_on: hash_on.clone().unwrap_or(HashOn::ClientAddress),
                }
            }
        };
        let base_weights = backends
            .iter()
            .map(|(_, w)| match policy {
                Policy::RoundRobin | Policy::Random => 1.0,
                _ => f64::from((*w).max(1)),
            })
            .collect();
        Self {
            len: backends.len(),
            kind,
            base_weights,
        }
    }

    /// The request property this selector hashes, if it is a Maglev selector.
    pub fn hash_on(&self) -> Option<&HashOn> {
        match &self.kind {
            Kind::Maglev { hash_on, .. } => Some(hash_on),
            _ => None,
        }
    }

    /// Picks a backend. `hash` is the request's hash for Maglev (see [`request_hash`]);
    /// `load` gives backend `i`'s requests in flight (and latency), for the least_* policies.
    pub fn pick(&self, hash: Option<u32>, load: impl BackendLoad) -> Option<usize> {
        let n = self.len;
        if n == 0 {
            return None;
        }
        if n == 1 {
            return Some(0);
        }
        if load.ramping() && !matches!(self.kind, Kind::Maglev { .. }) {
            return Some(self.pick_ramping(&load));
        }
        let index = match &self.kind {
            Kind::RoundRobin(next) => next.fetch_add(1, Relaxed) % n,
            Kind::Weighted { sequence, next } => {
                let i = next.fetch_add(1, Relaxed) % sequence.len().max(1);
                sequence.get(i).map_or(0, |b| *b as usize)
            }
            Kind::Random => fastrand::usize(..n),
            Kind::LeastRequest(choices) => {
                choices.pick(|i| load.in_flight(i) as f64 / choices.weights[i] as f64)
            }
            Kind::LeastResponseTime(choices) => {
                let (a, b) = choices.sample();
                // A backend that has not answered yet is costed like the other candidate,
                // so it is neither shunned nor flooded: its requests in flight decide.
                let (la, lb) = (load.latency(a), load.latency(b));
                let latency = |own: Option<f64>, other: Option<f64>| own.or(other).unwrap_or(1.0);
                let cost = |i: usize, latency: f64| {
                    latency * (load.in_flight(i) + 1) as f64 / choices.weights[i] as f64
                };
                choices.better(a, cost(a, latency(la, lb)), b, cost(b, latency(lb, la)))
            }
            Kind::Maglev { slots, .. } => {
                let slot = hash.and_then(|h| {
                    let size = u32::try_from(slots.len()).ok()?;
                    slots.get(maglev_slot(h, size) as usize).copied()
                });
                match slot {
                    Some(index) if index != EMPTY => index as usize,
                    // No key in the request (or no table): spread at random.
                    _ => fastrand::usize(..n),
                }
            }
        };
        Some(index)
    }
}

impl Selector {
    /// A pick while some backend is in its slow-start window: weights are scaled by each
    /// backend's ramp. The least_* policies draw their two choices and cost them by the
    /// scaled weights; the others draw one backend at random by them, which gives each the
    /// share its scaled weight asks for (a rotation cannot follow weights that change on
    /// every request). The ramp lasts one window, so this slower path is brief.
    fn pick_ramping(&self, load: &impl BackendLoad) -> usize {
        let weights: Vec<f64> = self
            .base_weights
            .iter()
            .enumerate()
            .map(|(i, w)| w * load.weight_factor(i).clamp(f64::MIN_POSITIVE, 1.0))
            .collect();
        match &self.kind {
            Kind::LeastRequest(_) => {
                let (a, b) = two_by_weight(&weights);
                let cost = |i: usize| load.in_flight(i) as f64 / weights[i];
                if cost(b) < cost(a) { b } else { a }
            }
            Kind::LeastResponseTime(_) => {
                let (a, b) = two_by_weight(&weights);
                let (la, lb) = (load.latency(a), load.latency(b));
                let latency = |own: Option<f64>, other: Option<f64>| own.or(other).unwrap_or(1.0);
                let cost =
                    |i: usize, latency: f64| latency * (load.in_flight(i) + 1) as f64 / weights[i];
                if cost(b, latency(lb, la)) < cost(a, latency(la, lb)) {
                    b
                } else {
                    a
                }
            }
            _ => one_by_weight(&weights, None),
        }
    }
}

/// A backend drawn with probability proportional to `weights[i]`, leaving out `except`.
fn one_by_weight(weights: &[f64], except: Option<usize>) -> usize {
    let weight = |i: usize| if Some(i) == except { 0.0 } else { weights[i] };
    let total: f64 = (0..weights.len()).map(weight).sum();
    let mut r = fastrand::f64() * total;
    let mut last = 0;
    for i in 0..weights.len() {
        if Some(i) == except {
            continue;
        }
        last = i;
        r -= weight(i);
        if r < 0.0 {
            return i;
        }
    }
    // Rounding left `r` at the very top: the last candidate owns it.
    last
}

/// Two distinct backends drawn by weight (at least two backends).
fn two_by_weight(weights: &[f64]) -> (usize, usize) {
    let a = one_by_weight(weights, None);
    (a, one_by_weight(weights, Some(a)))
}

/// What the least_* policies know of each backend.
pub trait BackendLoad {
    /// Requests in flight to backend `i` now.
    fn in_flight(&self, i: usize) -> usize;
    /// Backend `i`'s response time estimate in seconds (peak EWMA); `None` before its
    /// first answer.
    fn latency(&self, _i: usize) -> Option<f64> {
        None
    }
    /// Whether some backend is in its slow-start window now.
    fn ramping(&self) -> bool {
        false
    }
    /// The share of its weight backend `i` has now (1 outside slow start).
    fn weight_factor(&self, _i: usize) -> f64 {
        1.0
    }
}

impl<F: Fn(usize) -> usize> BackendLoad for F {
    fn in_flight(&self, i: usize) -> usize {
        self(i)
    }
}

/// Power of two choices with weights (Finagle's P2C, Envoy's weighted least request): two
/// distinct backends drawn with probability proportional to weight, and the cheaper wins.
/// A tie goes to the first drawn, so an idle least_request pool is spread by weight.
/// least_request's cost is requests in flight per unit of weight; least_response_time's is
/// latency x (requests in flight + 1) per unit of weight (Finagle's: a backend of twice the
/// weight counts as half as loaded).
#[derive(Debug)]
struct TwoChoices {
    weights: Vec<u64>,
    /// `cumulative[i]` is the sum of the weights before backend `i`, plus `weights[i]`.
    cumulative: Vec<u64>,
}

impl TwoChoices {
    fn new(backends: &[(SocketAddr, u16)]) -> Self {
        let weights: Vec<u64> = backends.iter().map(|(_, w)| u64::from(*w).max(1)).collect();
        let cumulative = weights
            .iter()
            .scan(0, |sum, w| {
                *sum += w;
                Some(*sum)
            })
            .collect();
        Self {
            weights,
            cumulative,
        }
    }

    /// The backend whose weight range holds `r` (`r` below the total).
    fn at(&self, r: u64) -> usize {
        self.cumulative
            .partition_point(|c| *c <= r)
            .min(self.weights.len() - 1)
    }

    /// Two distinct backends drawn by weight (callers have at least two).
    fn sample(&self) -> (usize, usize) {
        let total = self.cumulative.last().copied().unwrap_or(1);
        let a = self.at(fastrand::u64(..total));
        // Draw from the others by leaving out `a`'s range.
        let start = self.cumulative[a] - self.weights[a];
        let mut r = fastrand::u64(..total - self.weights[a]);
        if r >= start {
            r += self.weights[a];
        }
        (a, self.at(r))
    }

    /// `a` unless `b` costs less.
    fn better(&self, a: usize, cost_a: f64, b: usize, cost_b: f64) -> usize {
        if cost_b < cost_a { b } else { a }
    }

    fn pick(&self, cost: impl Fn(usize) -> f64) -> usize {
        let (a, b) = self.sample();
        self.better(a, cost(a), b, cost(b))
    }
}

/// nginx's smooth weighted round robin, unrolled into one period: each step every backend
/// gains its weight, the richest is picked and pays the total. Weights are divided by their
/// greatest common divisor, and scaled down when their sum is above [`MAX_SEQUENCE`].
pub fn smooth_weighted_sequence(weights: impl Iterator<Item = u16>) -> Vec<u32> {
    let mut weights: Vec<u64> = weights.map(u64::from).collect();
    let divisor = weights.iter().copied().fold(0, gcd).max(1);
    weights.iter_mut().for_each(|w| *w /= divisor);
    let total: u64 = weights.iter().sum();
    if total > MAX_SEQUENCE {
        weights
            .iter_mut()
            .for_each(|w| *w = (*w * MAX_SEQUENCE / total).max(1));
    }
    let total: i64 = weights.iter().map(|w| *w as i64).sum();
    let mut current = vec![0i64; weights.len()];
    let mut sequence = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += *w as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        sequence.push(best as u32);
    }
    sequence
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The hash of the request property `hash_on` names; `None` when the request lacks it.
pub fn request_hash(hash_on: &HashOn, headers: &HeaderMap, client: IpAddr) -> Option<u32> {
    match hash_on {
        HashOn::Header(name) => headers.get(name.as_str()).map(|v| hash_bytes(v.as_bytes())),
        HashOn::Cookie(name) => cookie(headers, name).map(|v| hash_bytes(v.as_bytes())),
        HashOn::ClientAddress => {
            let input = match client {
                IpAddr::V4(a) => FlowHashInput::from_v4(a.octets(), [0; 4], 0, 0, 0),
                IpAddr::V6(a) => FlowHashInput::from_v6(a.octets(), [0; 16], 0, 0, 0),
            };
            Some(flow_hash(&input, 0))
        }
    }
}

/// The value of cookie `name` in the request's Cookie headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// FNV-1a over `bytes`, then MurmurHash3's finaliser so close inputs spread over the table.
/// Fixed forever, like the flow hash: every instance must pick the same backend for a key.
pub fn hash_bytes(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[cfg(test)]
#[path = "balance_tests.rs"]
mod tests;
