//! Each backend's preference order over the slots: the paper's `offset + j * skip (mod M)`.
//!
//! The hashes are written out here rather than taken from `std` because they are part of the
//! wire contract; golden-value tests pin them.

/// A backend's walk through its permutation `offset, offset + skip, ...` (mod M).
pub(super) struct Cursor {
    position: u32,
    skip: u32,
}

impl Cursor {
    pub(super) fn new(key: &[u8], m: u32, seed: u32) -> Self {
        let (offset, skip) = permutation(key, m, seed);
        Self {
            position: offset,
            skip,
        }
    }

    /// Returns the next preferred slot and moves past it.
    pub(super) fn advance(&mut self, m: u32) -> u32 {
        let slot = self.position;
        // Both are below m <= 2^24, so the sum cannot overflow.
        self.position += self.skip;
        if self.position >= m {
            self.position -= m;
        }
        slot
    }
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
