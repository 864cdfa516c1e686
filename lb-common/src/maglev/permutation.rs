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

/// A backend's permutation of the slots.
pub(super) struct Walk {
    offset: u32,
    skip: u32,
}

impl Walk {
    pub(super) fn new(key: &[u8], m: u32, seed: u32) -> Self {
        let (offset, skip) = permutation(key, m, seed);
        Self { offset, skip }
    }

    /// The `j`-th preferred slot, given `spread = j^e` from [`Spread::power`].
    pub(super) fn slot(&self, spread: u32, m: u32) -> u32 {
        // Below 2^24 + 2^48, so no overflow.
        let slot = u64::from(self.offset) + u64::from(self.skip) * u64::from(spread);
        (slot % u64::from(m)) as u32
    }
}

/// `j -> j^e (mod m)` for the smallest odd `e >= 3` coprime with `m - 1`: a bijection of the
/// integers mod the prime `m`.
pub(super) struct Spread {
    exponent: u32,
    m: u64,
}

impl Spread {
    pub(super) fn new(m: u32) -> Self {
        // m - 1 < 2^24 has at most 8 distinct prime factors, so this stops before e = 29.
        let exponent = (3..).step_by(2).find(|&e| gcd(e, m - 1) == 1).unwrap_or(1);
        Self {
            exponent,
            m: u64::from(m),
        }
    }

    /// `j^e mod m`, by square and multiply.
    pub(super) fn power(&self, j: u32) -> u32 {
        let (mut base, mut e, mut acc) = (u64::from(j) % self.m, self.exponent, 1 % self.m);
        while e > 0 {
            if e & 1 == 1 {
                acc = acc * base % self.m;
            }
            base = base * base % self.m;
            e >>= 1;
        }
        acc as u32
    }
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
