//! The flow hash and the Maglev slot formula, shared by the XDP program and the agent.
//!
//! Both are part of Sluice's wire contract: several Sluice instances behind ECMP must send a
//! given connection to the same backend, whichever instance receives its packets, so the hash
//! and the slot formula must never change. Golden-value tests pin them.
//!
//! # The flow hash, exactly
//!
//! [`flow_hash`] is MurmurHash3 x86_32 (Austin Appleby's public-domain `MurmurHash3_x86_32`),
//! seeded with `seed`, over the 40-byte string formed by these ten 32-bit words, each encoded
//! little-endian:
//!
//! | word  | value                                              |
//! |-------|----------------------------------------------------|
//! | 0..=3 | source address                                     |
//! | 4..=7 | destination address                                |
//! | 8     | `(src_port << 16) \| dst_port`                       |
//! | 9     | protocol number (e.g. 6 for TCP, 17 for UDP)       |
//!
//! Addresses and ports are numeric values in host order: an address word is
//! `u32::from_be_bytes` of four consecutive octets as they appear on the wire. An IPv4 address
//! occupies word 0 and words 1..=3 are zero. The constructors on [`FlowHashInput`] do this
//! conversion, so both sides should build inputs through them.

/// Default number of slots in a Maglev table (a prime, as Maglev requires).
///
/// Defined here rather than in the user-only `maglev` module so the XDP program can size its
/// lookup map with the same value; `maglev::DEFAULT_TABLE_SIZE` re-exports it.
pub const DEFAULT_TABLE_SIZE: u32 = 65537;

/// The fields of a connection that pick its backend.
///
/// Addresses are four 32-bit words in host order (see the module documentation); ports are
/// port numbers in host order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowHashInput {
    /// Source address; IPv4 in word 0, words 1..=3 zero.
    pub src_addr: [u32; 4],
    /// Destination address; IPv4 in word 0, words 1..=3 zero.
    pub dst_addr: [u32; 4],
    /// Source port (0 for protocols without ports).
    pub src_port: u16,
    /// Destination port (0 for protocols without ports).
    pub dst_port: u16,
    /// IP protocol number.
    pub protocol: u8,
}

impl FlowHashInput {
    /// An IPv4 flow from the addresses' octets in wire order.
    #[inline(always)]
    pub const fn from_v4(
        src: [u8; 4],
        dst: [u8; 4],
        src_port: u16,
        dst_port: u16,
        protocol: u8,
    ) -> Self {
        Self {
            src_addr: [u32::from_be_bytes(src), 0, 0, 0],
            dst_addr: [u32::from_be_bytes(dst), 0, 0, 0],
            src_port,
            dst_port,
            protocol,
        }
    }

    /// An IPv6 flow from the addresses' octets in wire order.
    #[inline(always)]
    pub const fn from_v6(
        src: [u8; 16],
        dst: [u8; 16],
        src_port: u16,
        dst_port: u16,
        protocol: u8,
    ) -> Self {
        Self {
            src_addr: v6_words(src),
            dst_addr: v6_words(dst),
            src_port,
            dst_port,
            protocol,
        }
    }
}

#[inline(always)]
const fn v6_words(o: [u8; 16]) -> [u32; 4] {
    [
        u32::from_be_bytes([o[0], o[1], o[2], o[3]]),
        u32::from_be_bytes([o[4], o[5], o[6], o[7]]),
        u32::from_be_bytes([o[8], o[9], o[10], o[11]]),
        u32::from_be_bytes([o[12], o[13], o[14], o[15]]),
    ]
}

/// Hashes a flow to 32 bits. Deterministic and fixed forever; see the module documentation.
///
/// Straight-line code over a fixed number of words, with no loops, tables or branches, so the
/// BPF verifier accepts it cheaply. `seed` lets an operator re-shuffle flows deliberately; every
/// instance behind the same ECMP group must use the same seed.
#[inline(always)]
pub fn flow_hash(input: &FlowHashInput, seed: u32) -> u32 {
    let mut h = seed;
    h = murmur3_round(h, input.src_addr[0]);
    h = murmur3_round(h, input.src_addr[1]);
    h = murmur3_round(h, input.src_addr[2]);
    h = murmur3_round(h, input.src_addr[3]);
    h = murmur3_round(h, input.dst_addr[0]);
    h = murmur3_round(h, input.dst_addr[1]);
    h = murmur3_round(h, input.dst_addr[2]);
    h = murmur3_round(h, input.dst_addr[3]);
    h = murmur3_round(
        h,
        (u32::from(input.src_port) << 16) | u32::from(input.dst_port),
    );
    h = murmur3_round(h, u32::from(input.protocol));
    // MurmurHash3 mixes in the input length in bytes before finalising.
    murmur3_fmix32(h ^ 40)
}

/// Maps a flow hash to a slot of a Maglev table of `table_size` slots.
///
/// The one place the slot formula lives: the agent fills slot `s` expecting the XDP program to
/// send hashes with `maglev_slot(hash, size) == s` there. A zero `table_size` yields slot 0
/// rather than a division fault; callers never build such a table.
#[inline(always)]
pub fn maglev_slot(hash: u32, table_size: u32) -> u32 {
    hash.checked_rem(table_size).unwrap_or_default()
}

/// One 4-byte block of MurmurHash3 x86_32.
#[inline(always)]
fn murmur3_round(h: u32, k: u32) -> u32 {
    let k = k
        .wrapping_mul(0xcc9e_2d51)
        .rotate_left(15)
        .wrapping_mul(0x1b87_3593);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

/// MurmurHash3's 32-bit finaliser: every input bit affects every output bit.
#[inline(always)]
fn murmur3_fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference MurmurHash3 x86_32 over arbitrary bytes, to show `flow_hash` is exactly the
    /// documented function (and so can be reimplemented elsewhere from the docs alone).
    fn murmur3_x86_32(bytes: &[u8], seed: u32) -> u32 {
        let mut h = seed;
        let mut blocks = bytes.chunks_exact(4);
        for block in &mut blocks {
            h = murmur3_round(
                h,
                u32::from_le_bytes([block[0], block[1], block[2], block[3]]),
            );
        }
        let tail = blocks.remainder();
        if !tail.is_empty() {
            let mut k = 0u32;
            for (i, byte) in tail.iter().enumerate() {
                k |= u32::from(*byte) << (8 * i);
            }
            h ^= k
                .wrapping_mul(0xcc9e_2d51)
                .rotate_left(15)
                .wrapping_mul(0x1b87_3593);
        }
        murmur3_fmix32(h ^ bytes.len() as u32)
    }

    fn encode(input: &FlowHashInput) -> [u8; 40] {
        let words = [
            input.src_addr[0],
            input.src_addr[1],
            input.src_addr[2],
            input.src_addr[3],
            input.dst_addr[0],
            input.dst_addr[1],
            input.dst_addr[2],
            input.dst_addr[3],
            (u32::from(input.src_port) << 16) | u32::from(input.dst_port),
            u32::from(input.protocol),
        ];
        let mut out = [0u8; 40];
        for (chunk, word) in out.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        out
    }

    /// SplitMix64: a tiny deterministic generator so the tests need no `rand`.
    struct SplitMix64(u64);

    impl SplitMix64 {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn next_u32(&mut self) -> u32 {
            (self.next() >> 32) as u32
        }

        fn flow(&mut self, v6: bool) -> FlowHashInput {
            let mut addr = || {
                if v6 {
                    [
                        self.next_u32(),
                        self.next_u32(),
                        self.next_u32(),
                        self.next_u32(),
                    ]
                } else {
                    [self.next_u32(), 0, 0, 0]
                }
            };
            let (src_addr, dst_addr) = (addr(), addr());
            let ports = self.next_u32();
            FlowHashInput {
                src_addr,
                dst_addr,
                src_port: (ports >> 16) as u16,
                dst_port: ports as u16,
                protocol: if ports & 1 == 0 { 6 } else { 17 },
            }
        }
    }

    #[test]
    fn reference_murmur3_matches_published_vectors() {
        // Widely published MurmurHash3_x86_32 test vectors.
        assert_eq!(murmur3_x86_32(b"", 0), 0);
        assert_eq!(murmur3_x86_32(b"", 1), 0x514e_28b7);
        assert_eq!(murmur3_x86_32(b"", 0xffff_ffff), 0x81f1_6f39);
        assert_eq!(murmur3_x86_32(&[0xff; 4], 0), 0x7629_3b50);
        assert_eq!(murmur3_x86_32(&[0x21, 0x43, 0x65, 0x87], 0), 0xf55b_516b);
        assert_eq!(
            murmur3_x86_32(&[0x21, 0x43, 0x65, 0x87], 0x5082_edee),
            0x2362_f9de
        );
        assert_eq!(murmur3_x86_32(b"aaaa", 0x9747_b28c), 0x5a97_808a);
        assert_eq!(murmur3_x86_32(b"Hello, world!", 0x9747_b28c), 0x2488_4cba);
        assert_eq!(
            murmur3_x86_32(b"The quick brown fox jumps over the lazy dog", 0x9747_b28c),
            0x2fa8_26cd
        );
    }

    #[test]
    fn flow_hash_is_murmur3_over_the_documented_encoding() {
        let mut rng = SplitMix64(7);
        for i in 0..1000 {
            let input = rng.flow(i % 2 == 0);
            let seed = rng.next_u32();
            assert_eq!(
                flow_hash(&input, seed),
                murmur3_x86_32(&encode(&input), seed)
            );
        }
    }

    #[test]
    fn golden_values() {
        // Part of the wire contract: if this fails, the hash changed and mixed-version fleets
        // behind ECMP would disagree on backends. Do not update these values; fix the code.
        let tcp_v4 = FlowHashInput::from_v4([10, 0, 0, 1], [192, 168, 1, 10], 40000, 80, 6);
        let udp_v4 = FlowHashInput::from_v4([172, 16, 5, 4], [10, 1, 2, 3], 5353, 53, 17);
        let mut src6 = [0u8; 16];
        src6[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        src6[15] = 1;
        let mut dst6 = src6;
        dst6[15] = 2;
        let tcp_v6 = FlowHashInput::from_v6(src6, dst6, 51000, 443, 6);
        let zero = FlowHashInput::default();

        assert_eq!(tcp_v4.src_addr, [0x0a00_0001, 0, 0, 0]);
        assert_eq!(tcp_v6.dst_addr, [0x2001_0db8, 0, 0, 2]);
        assert_eq!(flow_hash(&zero, 0), GOLDEN[0]);
        assert_eq!(flow_hash(&tcp_v4, 0), GOLDEN[1]);
        assert_eq!(flow_hash(&tcp_v4, 0xdead_beef), GOLDEN[2]);
        assert_eq!(flow_hash(&udp_v4, 0), GOLDEN[3]);
        assert_eq!(flow_hash(&tcp_v6, 0), GOLDEN[4]);
        assert_eq!(flow_hash(&tcp_v6, 42), GOLDEN[5]);
        assert_eq!(
            maglev_slot(GOLDEN[1], DEFAULT_TABLE_SIZE),
            GOLDEN[1] % 65537
        );
    }

    const GOLDEN: [u32; 6] = [
        0xc206_7ae9,
        0x0706_d4d7,
        0xda59_9717,
        0xc69c_087d,
        0xc3af_5d00,
        0xd083_6aba,
    ];

    #[test]
    fn maglev_slot_is_hash_mod_size() {
        assert_eq!(maglev_slot(65537, DEFAULT_TABLE_SIZE), 0);
        assert_eq!(maglev_slot(65538, DEFAULT_TABLE_SIZE), 1);
        assert_eq!(maglev_slot(u32::MAX, DEFAULT_TABLE_SIZE), u32::MAX % 65537);
        assert_eq!(maglev_slot(12345, 0), 0);
    }

    #[test]
    fn changing_any_field_changes_the_hash() {
        // Each MurmurHash3 step after a block is a bijection of the state, so for a fixed
        // length a change to any one word always changes the output; check every bit.
        let mut rng = SplitMix64(11);
        for case in 0..64 {
            let base = rng.flow(case % 2 == 0);
            let seed = rng.next_u32();
            let h = flow_hash(&base, seed);
            for bit in 0..32 {
                for word in 0..4 {
                    let mut x = base;
                    x.src_addr[word] ^= 1 << bit;
                    assert_ne!(flow_hash(&x, seed), h, "src_addr[{word}] bit {bit}");
                    let mut x = base;
                    x.dst_addr[word] ^= 1 << bit;
                    assert_ne!(flow_hash(&x, seed), h, "dst_addr[{word}] bit {bit}");
                }
                assert_ne!(flow_hash(&base, seed ^ (1 << bit)), h, "seed bit {bit}");
            }
            for bit in 0..16 {
                let mut x = base;
                x.src_port ^= 1 << bit;
                assert_ne!(flow_hash(&x, seed), h, "src_port bit {bit}");
                let mut x = base;
                x.dst_port ^= 1 << bit;
                assert_ne!(flow_hash(&x, seed), h, "dst_port bit {bit}");
            }
            for bit in 0..8 {
                let mut x = base;
                x.protocol ^= 1 << bit;
                assert_ne!(flow_hash(&x, seed), h, "protocol bit {bit}");
            }
            // A reversed flow is a different flow (the XDP program sees one direction only).
            let mut reversed = base;
            core::mem::swap(&mut reversed.src_addr, &mut reversed.dst_addr);
            core::mem::swap(&mut reversed.src_port, &mut reversed.dst_port);
            if reversed != base {
                assert_ne!(flow_hash(&reversed, seed), h);
            }
        }
    }

    /// Pearson's chi-square statistic of `n` hashes into `buckets` buckets.
    fn chi_square(buckets: usize, hashes: impl Iterator<Item = u32>) -> f64 {
        let mut counts = [0u32; 1000];
        let counts = &mut counts[..buckets];
        let mut n = 0u32;
        for h in hashes {
            counts[maglev_slot(h, buckets as u32) as usize] += 1;
            n += 1;
        }
        let expected = f64::from(n) / buckets as f64;
        counts
            .iter()
            .map(|&c| (f64::from(c) - expected).powi(2) / expected)
            .sum()
    }

    // With 999 degrees of freedom the statistic has mean 999 and standard deviation about 44.7;
    // 1250 is more than five deviations out, so a sound hash essentially never fails this.
    const CHI_SQUARE_BOUND: f64 = 1250.0;

    #[test]
    fn random_flows_spread_evenly() {
        for v6 in [false, true] {
            let mut rng = SplitMix64(if v6 { 2 } else { 1 });
            let stat = chi_square(1000, (0..100_000).map(|_| flow_hash(&rng.flow(v6), 0)));
            assert!(stat < CHI_SQUARE_BOUND, "v6={v6}: chi-square {stat}");
        }
    }

    #[test]
    fn structured_flows_spread_evenly() {
        // Real traffic is far from random: one client, every ephemeral port; or one port,
        // sequential client addresses.
        let ports = (1024..=u16::MAX).map(|sport| {
            flow_hash(
                &FlowHashInput::from_v4([10, 0, 0, 1], [10, 9, 9, 9], sport, 443, 6),
                0,
            )
        });
        let stat = chi_square(1000, ports);
        assert!(
            stat < CHI_SQUARE_BOUND,
            "sequential ports: chi-square {stat}"
        );

        let addrs = (0..100_000u32).map(|i| {
            let src = (0x0a00_0000 + i).to_be_bytes();
            flow_hash(
                &FlowHashInput::from_v4(src, [10, 9, 9, 9], 33000, 443, 6),
                0,
            )
        });
        let stat = chi_square(1000, addrs);
        assert!(
            stat < CHI_SQUARE_BOUND,
            "sequential addresses: chi-square {stat}"
        );
    }

    #[test]
    fn single_bit_flips_avalanche() {
        // On average a one-bit input change should flip about half of the 32 output bits.
        let mut rng = SplitMix64(3);
        let (mut flipped, mut trials) = (0u64, 0u64);
        for _ in 0..2000 {
            let base = rng.flow(true);
            let h = flow_hash(&base, 0);
            let bit = rng.next_u32() % 32;
            let word = (rng.next_u32() % 4) as usize;
            let mut x = base;
            x.dst_addr[word] ^= 1 << bit;
            flipped += u64::from((flow_hash(&x, 0) ^ h).count_ones());
            trials += 1;
        }
        let mean = flipped as f64 / trials as f64;
        assert!((15.5..16.5).contains(&mean), "mean flipped bits {mean}");
    }
}
