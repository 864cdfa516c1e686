//! Incremental Internet checksum updates (RFC 1624), on values exactly as they sit in memory:
//! one's-complement sums do not depend on byte order as long as every word is read the same
//! way, so nothing is byte-swapped here.

#[inline(always)]
fn fold(mut sum: u64) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// The checksum after a 16-bit word of the covered data changed from `from` to `to`.
#[inline(always)]
pub fn replace2(check: u16, from: u16, to: u16) -> u16 {
    let sum = u64::from(!check) + u64::from(!from) + u64::from(to);
    !fold(sum)
}

/// The checksum after a 32-bit word of the covered data changed from `from` to `to`.
#[inline(always)]
pub fn replace4(check: u16, from: u32, to: u32) -> u16 {
    let sum = u64::from(!check)
        + u64::from(!from & 0xffff)
        + u64::from(!from >> 16)
        + u64::from(to & 0xffff)
        + u64::from(to >> 16);
    !fold(sum)
}

/// The checksum after a 128-bit address changed from `from` to `to`.
#[inline(always)]
pub fn replace16(check: u16, from: &[u32; 4], to: &[u32; 4]) -> u16 {
    let mut check = check;
    check = replace4(check, from[0], to[0]);
    check = replace4(check, from[1], to[1]);
    check = replace4(check, from[2], to[2]);
    replace4(check, from[3], to[3])
}
