//! The cases the XDP bench measures: which program, which frames, and the verdict, counters
//! and output frame that prove the intended path ran.

use std::net::SocketAddr;

use anyhow::{Result, bail};
use lb_common::flow::FlowKey;
use lb_common::stats::Reason;
use sluice_tests::xdp_lab::{Family, client_ip};

use super::dataplane::{Dataplane, Program};
use super::frames::{self, Output, Segment};
use super::katran::Route;
use super::services::{Mode, SERVICE_PORT, vip};

pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

/// The name of an XDP verdict.
pub fn verdict_name(verdict: u32) -> &'static str {
    match verdict {
        0 => "XDP_ABORTED",
        1 => "XDP_DROP",
        2 => "XDP_PASS",
        3 => "XDP_TX",
        4 => "XDP_REDIRECT",
        _ => "unknown",
    }
}

/// What a case sends.
pub enum Input {
    /// The same frame every call (the kernel copies it in afresh each time).
    Same(Vec<u8>),
    /// A TCP SYN of a flow never seen before, every call.
    NewFlows {
        family: Family,
        mode: Mode,
        next: u64,
    },
}

pub struct Case {
    pub name: String,
    pub program: Program,
    pub input: Input,
    pub verdict: u32,
    /// Counters each call must add one to, besides `Seen`; every other counter must stay put.
    pub reasons: Vec<Reason>,
    pub output: Output,
    /// Katran runs the same frames too, and must take this path.
    pub katran: Option<Route>,
}

impl Case {
    /// Frames for `calls` calls: call `i` sends `frames[i % frames.len()]`.
    pub fn frames(&mut self, calls: u32) -> Result<Vec<Vec<u8>>> {
        match &mut self.input {
            Input::Same(frame) => Ok(vec![frame.clone()]),
            Input::NewFlows { family, mode, next } => {
                let dst = SocketAddr::new(vip(*family, *mode), SERVICE_PORT);
                let ipv6 = *family == Family::V6;
                let frames = (*next..*next + u64::from(calls))
                    .map(|seq| frames::frame(Segment::Syn, frames::fresh_client(ipv6, seq), dst))
                    .collect();
                *next += u64::from(calls);
                frames
            }
        }
    }

    pub fn new_flows(&self) -> bool {
        matches!(self.input, Input::NewFlows { .. })
    }

    /// The one frame of a case timed by the warm method, for cases whose output takes the
    /// same path again (DSR rewrites only MACs, a passed frame is untouched), so Sluice needs
    /// no restoring wrapper. Not new flows, whose point is a tuple never seen before.
    pub fn warm_frame(&self) -> Option<&[u8]> {
        match (&self.input, self.output) {
            (Input::Same(frame), Output::Unchanged | Output::Dsr) => Some(frame),
            _ => None,
        }
    }
}

fn family_name(family: Family) -> &'static str {
    match family {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    }
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Dsr => "DSR",
        Mode::Nat => "NAT",
    }
}

fn forwarded(mode: Mode) -> (Reason, Output) {
    match mode {
        Mode::Dsr => (Reason::ForwardDsr, Output::Dsr),
        Mode::Nat => (Reason::ForwardNat, Output::Nat),
    }
}

/// Every case, in table order. Established flows are put in the connection table here, by
/// one un-timed call of the program itself, checked to have been a new flow.
pub fn build(dp: &Dataplane) -> Result<Vec<Case>> {
    let client4 = SocketAddr::new(client_ip(Family::V4), 40_000);
    let dsr4 = SocketAddr::new(vip(Family::V4, Mode::Dsr), SERVICE_PORT);
    let no_service = SocketAddr::new("10.9.0.99".parse()?, 53);
    let mut cases = vec![
        Case {
            name: "empty program (sluice_pass), IPv4 TCP".into(),
            program: Program::Empty,
            input: Input::Same(frames::frame(Segment::TcpData, client4, dsr4)?),
            verdict: XDP_PASS,
            reasons: vec![],
            output: Output::Unchanged,
            katran: None,
        },
        Case {
            name: "IPv4 UDP, no service".into(),
            program: Program::Sluice,
            input: Input::Same(frames::frame(Segment::Udp, client4, no_service)?),
            verdict: XDP_PASS,
            reasons: vec![Reason::PassNoService],
            output: Output::Unchanged,
            katran: Some(Route::NoService),
        },
    ];
    let mut port = 40_001;
    for family in [Family::V4, Family::V6] {
        for mode in [Mode::Dsr, Mode::Nat] {
            let (forward, output) = forwarded(mode);
            cases.push(Case {
                name: format!(
                    "{} TCP new flow (SYN), {}",
                    family_name(family),
                    mode_name(mode)
                ),
                program: Program::Sluice,
                input: Input::NewFlows {
                    family,
                    mode,
                    next: 0,
                },
                verdict: XDP_TX,
                reasons: vec![forward, Reason::FlowNew],
                output,
                katran: (mode == Mode::Dsr).then_some(Route::NewFlow),
            });
        }
        for (segment, l4) in [(Segment::TcpData, "TCP"), (Segment::Udp, "UDP")] {
            // IPv6 UDP adds little to IPv6 TCP and IPv4 UDP, so it is left out.
            if family == Family::V6 && segment == Segment::Udp {
                continue;
            }
            for mode in [Mode::Dsr, Mode::Nat] {
                let client = SocketAddr::new(client_ip(family), port);
                port += 1;
                let dst = SocketAddr::new(vip(family, mode), SERVICE_PORT);
                let frame = frames::frame(segment, client, dst)?;
                establish(dp, &frame, mode)?;
                let (forward, output) = forwarded(mode);
                // Katran forwards by encapsulation, the counterpart of DSR; it has no NAT.
                let katran = (mode == Mode::Dsr).then_some(Route::Established);
                cases.push(Case {
                    name: format!(
                        "{} {l4} established, {}",
                        family_name(family),
                        mode_name(mode)
                    ),
                    program: Program::Sluice,
                    input: Input::Same(frame),
                    verdict: XDP_TX,
                    reasons: vec![forward, Reason::FlowEstablished],
                    output,
                    katran,
                });
                if mode == Mode::Nat && segment == Segment::TcpData {
                    cases.push(nat_reply(dp, family, client, dst)?);
                }
            }
        }
    }
    Ok(cases)
}

/// The backend's reply on the NAT flow `client` → `vip`, which the program must send back to
/// the client from the VIP.
fn nat_reply(dp: &Dataplane, family: Family, client: SocketAddr, vip: SocketAddr) -> Result<Case> {
    let (src_addr, fam) = lb_common::addr::to_wire(client.ip());
    let key = FlowKey {
        src_addr,
        dst_addr: lb_common::addr::to_wire(vip.ip()).0,
        src_port: client.port().to_be(),
        dst_port: vip.port().to_be(),
        protocol: lb_common::addr::PROTO_TCP,
        family: fam,
        _pad: [0; 2],
    };
    let backend = dp.backend_of(&key)?;
    Ok(Case {
        name: format!("{} TCP NAT reply (backend to client)", family_name(family)),
        program: Program::Sluice,
        input: Input::Same(frames::frame(Segment::TcpData, backend, client)?),
        verdict: XDP_TX,
        reasons: vec![Reason::ForwardNatReply],
        output: Output::NatReply(vip.ip()),
        katran: None,
    })
}

/// Sends the first packet of a flow, so that later ones find it in the connection table.
fn establish(dp: &Dataplane, frame: &[u8], mode: Mode) -> Result<()> {
    let program = dp.program(Program::Sluice)?;
    let before = dp.counts()?;
    let mut out = vec![0; frame.len() + 256];
    let run = dp.run(program, frame, &mut out, 1)?;
    let after = dp.counts()?;
    let new = after[Reason::FlowNew as usize] - before[Reason::FlowNew as usize];
    let (forward, _) = forwarded(mode);
    let sent = after[forward as usize] - before[forward as usize];
    if run.verdict != XDP_TX || new != 1 || sent != 1 {
        bail!(
            "the first packet of an established-flow case was not forwarded as a new flow \
             (verdict {}, FlowNew +{new}, {forward:?} +{sent}); check the namespace's \
             neighbours and the maps",
            verdict_name(run.verdict)
        );
    }
    Ok(())
}
