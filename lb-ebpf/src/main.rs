//! Sluice's XDP program. The entry point hands the frame to the fallible TCP/UDP path in
//! `steer`, or, for other IP protocols, to the ICMP path in `icmp`: an error is the reason to
//! pass the packet up untouched, and every packet is counted under its reason (an ICMP packet
//! the ICMP path handled, under its ICMP reason).
#![no_std]
#![no_main]

mod conntrack;
mod csum;
mod flood;
mod icmp;
mod maps;
mod nat;
mod parse;
mod stats;
mod steer;
mod transmit;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use lb_common::stats::Reason;

#[xdp]
pub fn sluice_xdp(ctx: XdpContext) -> u32 {
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    stats::count(Reason::Seen, bytes);
    // The upgrade tests' variant: one more counter update makes it another program.
    #[cfg(feature = "upgrade-test")]
    stats::count(Reason::Seen, 0);
    // Each path is a BPF function of its own, which counts what it does: the verifier allows
    // 512 bytes of stack over a chain of calls, and the two paths' would not fit in one.
    if parse::other_protocol(&ctx) {
        icmp::handle(ctx.ctx, bytes)
    } else {
        steer::handle(ctx.ctx, bytes)
    }
}

/// Passes every packet up. Attached to veth peers the data path transmits into: the kernel
/// drops XDP_TX/XDP_REDIRECT frames into a veth whose peer runs no XDP program.
#[xdp]
pub fn sluice_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach this; it exists only to link.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
