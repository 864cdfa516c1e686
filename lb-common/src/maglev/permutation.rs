//! Each backend's preference order over the slots: `offset + skip * j^e (mod M)` for
//! `j = 0, 1, ...`, from the paper's per-key `offset` and `skip`.
//!
//! The paper walks `offset + skip * j`. Two such walks are affine images of each other, so when
//! one backend's skip is a small multiple or fraction of another's (2, 1/2, -3/2, ...) and the
//! offsets line up, their early preferences overlap heavily, and removing one gives the other
//! many slots it would not otherwise have had. With a handful of backends, where each walk is
//! long, that happened in about one removal in 300 and moved up to 1.6% of the table beyond
//! the removed backend's share. Raising `j` to a power `e` coprime with `M - 1` (a bijection
//! of the integers mod `M`, since `M` is prime) keeps every walk a permutation but makes the
//! walks of two backends unrelated unless their offsets are equal.
//!
//! The hashes are written out here rather than taken from `std` because they are part of the
//! wire contract; golden-value tests pin them.

use std::vec::Vec;

/// A backend's permutation of the slots.
#[derive(Clone, Copy)]
pub(super) struct Walk {
    offset: u32,
    skip: u32,
}

impl Walk {
    pub(super) fn new(key: &[u8], m: u32, seed: u32) -> Self {
        let (offset, skip) = permutation(key, m, seed);
        Self { offset, skip }
    }

    /// The walk's first slot and its forward differences there, given those of the spread
    /// ([`Spread::differences`]): what [`super::fill`] steps through with additions alone.
    pub(super) fn start(
        &self,
        spread_differences: &[u32],
        m: Modulus,
    ) -> (u32, impl Iterator<Item = u32>) {
        let skip = u64::from(self.skip);
        let differences = spread_differences
            .iter()
            .map(move |&d| m.reduce(skip * u64::from(d)));
        (self.slot(0, m), differences)
    }

    /// The `j`-th preferred slot, given `spread = j^e` from [`Spread::power`].
    pub(super) fn slot(&self, spread: u32, m: Modulus) -> u32 {
        // Below 2^24 + 2^48, so no overflow.
        m.reduce(u64::from(self.offset) + u64::from(self.skip) * u64::from(spread))
    }
}

/// A walk run backwards: from a slot to the `spread` value at which the walk reaches it.
pub(super) struct InverseWalk {
    offset: u32,
    /// `skip^-1 mod m`.
    inverse_skip: u32,
}

impl Walk {
    /// The walk run backwards (`m` prime, so `skip`, below `m`, has an inverse).
    pub(super) fn inverse(&self, m: Modulus) -> InverseWalk {
        // Fermat: skip^(m-2) = skip^-1 mod a prime m.
        let exponent = u64::from(m.value()).saturating_sub(2);
        InverseWalk {
            offset: self.offset,
            inverse_skip: m.pow(self.skip, exponent),
        }
    }
}

impl InverseWalk {
    /// The `spread` (see [`Walk::slot`]) at which the walk reaches `slot`.
    pub(super) fn spread_at(&self, slot: u32, m: Modulus) -> u32 {
        let distance = m.reduce(u64::from(slot) + u64::from(m.value()) - u64::from(self.offset));
        m.reduce(u64::from(distance) * u64::from(self.inverse_skip))
    }
}

/// `x mod m` for a fixed `m` by Barrett reduction: a multiply in place of a 64-bit division,
/// which was most of a table build's time. Exact, so tables do not change.
#[derive(Clone, Copy)]
pub(super) struct Modulus {
    m: u64,
    /// `floor(2^64 / m)`.
    inverse: u64,
}

impl Modulus {
    /// `m` must be at least 2.
    pub(super) fn new(m: u32) -> Self {
        let m = u64::from(m.max(2));
        Self {
            m,
            inverse: ((1u128 << 64) / u128::from(m)) as u64,
        }
    }

    pub(super) fn value(self) -> u32 {
        self.m as u32
    }

    /// `base^exponent mod m`, by square and multiply.
    pub(super) fn pow(self, base: u32, mut exponent: u64) -> u32 {
        // Operands stay below m < 2^24, so products stay below 2^48.
        let (mut base, mut acc) = (self.reduce(u64::from(base)), self.reduce(1));
        while exponent > 0 {
            if exponent & 1 == 1 {
                acc = self.reduce(u64::from(acc) * u64::from(base));
            }
            base = self.reduce(u64::from(base) * u64::from(base));
            exponent >>= 1;
        }
        acc
    }

    /// `x mod m`, for `x < 2^63`.
    #[inline]
    pub(super) fn reduce(self, x: u64) -> u32 {
        // The estimate is the true quotient or one less (Barrett, with a 64-bit inverse and
        // x < 2^64), so one correction makes it exact.
        let quotient = ((u128::from(x) * u128::from(self.inverse)) >> 64) as u64;
        let mut rest = x - quotient * self.m;
        if rest >= self.m {
            rest -= self.m;
        }
        rest as u32
    }
}

/// `j -> j^e (mod m)` for the smallest odd `e >= 3` coprime with `m - 1`: a bijection of the
/// integers mod the prime `m`.
pub(super) struct Spread {
    exponent: u32,
    /// `exponent^-1 mod (m - 1)`: `v -> v^root` undoes `j -> j^exponent`.
    root: u64,
    m: Modulus,
}

impl Spread {
    pub(super) fn new(m: u32) -> Self {
        // m - 1 < 2^24 has at most 8 distinct prime factors, so this stops before e = 29.
        let exponent = (3..).step_by(2).find(|&e| gcd(e, m - 1) == 1).unwrap_or(1);
        Self {
            exponent,
            root: inverse_mod(u64::from(exponent), u64::from(m) - 1),
            m: Modulus::new(m),
        }
    }

    /// `j^e mod m`.
    pub(super) fn power(&self, j: u32) -> u32 {
        self.m.pow(j, u64::from(self.exponent))
    }

    /// The forward differences of `j -> j^e (mod m)` at `j = 0`, orders 1 to `e`: with them a
    /// walk steps from one probe to the next by `e` additions instead of a modular power and
    /// product (the `e`-th difference of a degree-`e` polynomial is constant).
    pub(super) fn differences(&self) -> Vec<u32> {
        let m = self.m.value();
        let mut values: Vec<u32> = (0..=self.exponent).map(|j| self.power(j % m)).collect();
        let mut differences = Vec::with_capacity(self.exponent as usize);
        for _ in 0..self.exponent {
            values = values
                .windows(2)
                .map(|w| {
                    if w[1] >= w[0] {
                        w[1] - w[0]
                    } else {
                        w[1] + m - w[0]
                    }
                })
                .collect();
            differences.push(values[0]);
        }
        differences
    }

    /// The `j` with `power(j) == v`: `v^root mod m` (for `m` of at least 3; with `m = 2`
    /// there is no inverse exponent to speak of, and callers do not ask).
    pub(super) fn root(&self, v: u32) -> u32 {
        self.m.pow(v, self.root)
    }
}

/// `a^-1 mod n` for `a` coprime with `n` (extended Euclid); 0 when `n` is 1.
fn inverse_mod(a: u64, n: u64) -> u64 {
    let (mut r0, mut r1) = (i128::from(n), i128::from(a % n.max(1)));
    let (mut t0, mut t1) = (0i128, 1i128);
    while r1 != 0 {
        let q = r0 / r1;
        (r0, r1) = (r1, r0 - q * r1);
        (t0, t1) = (t1, t0 - q * t1);
    }
    t0.rem_euclid(i128::from(n.max(1))) as u64
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The paper's `(offset, skip)` for a key: `offset = h1 % M`, `skip = h2 % (M - 1) + 1`.
/// `m` must be prime (so at least 2).
pub(super) fn permutation(key: &[u8], m: u32, seed: u32) -> (u32, u32) {
    let m = u64::from(m);
    let offset = key_hash(key, seed, OFFSET_DOMAIN) % m;
    let skip = key_hash(key, seed, SKIP_DOMAIN) % (m - 1) + 1;
    (offset as u32, skip as u32)
}

// Distinct starting states make h1 and h2 independent functions of the key.
pub(super) const OFFSET_DOMAIN: u64 = 0x6d61_676c_6576_6831; // "maglevh1"
pub(super) const SKIP_DOMAIN: u64 = 0x6d61_676c_6576_6832; // "maglevh2"

/// A 64-bit key hash, fixed forever: MurmurHash3's `fmix64` over 8-byte little-endian words
/// (the last zero-padded), then over the length so padding cannot collide.
pub(super) fn key_hash(key: &[u8], seed: u32, domain: u64) -> u64 {
    let mut h = fmix64(domain ^ u64::from(seed));
    for chunk in key.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = fmix64(h ^ u64::from_le_bytes(word));
    }
    fmix64(h ^ key.len() as u64)
}

fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}
