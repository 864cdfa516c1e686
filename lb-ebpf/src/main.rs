//! Sluice's XDP program. The entry point is a thin adapter over the fallible packet path in
//! `steer`: an error is the reason to pass the packet up untouched, and every packet is
//! counted under its reason.
#![no_std]
#![no_main]

mod conntrack;
mod csum;
mod flood;
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
    let (action, reason) = match steer::process(&ctx, bytes) {
        Ok(verdict) => verdict,
        Err(reason) => (xdp_action::XDP_PASS, reason),
    };
    stats::count(reason, bytes);
    action
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
