//! New-flow limits: above the per-CPU rate, new flows are forwarded by Maglev without a
//! connection-table entry while established flows keep theirs; a source past its token
//! bucket loses its new flows (only openings count), and gets more as the bucket refills.

use std::net::{IpAddr, Ipv4Addr};

use lb_common::conntrack::{TCP_ACK, TCP_SYN};
use lb_common::limits::{SETTING_NEW_FLOWS_PER_CPU, SETTING_SOURCE_BURST, SETTING_SOURCE_RATE};
use lb_common::service::{SERVICE_DSR, SERVICE_NAT};
use lb_common::stats::Reason::{
    DropSourceRate, FlowEstablished, FlowNew, FlowNotTracked, ForwardDsr, ForwardNat,
};

use crate::frames::{Frame, L4, sock};
use crate::lab::{Family, Lab, XDP_DROP, XDP_TX, client_ip, vip};
use crate::tcp_states::{client, tcp, two_backend_service};

/// PROG_TEST_RUN runs on the calling thread's CPU: keep it on one, so one per-CPU window
/// sees every packet.
fn stay_on_one_cpu() {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET and sched_setaffinity get valid pointers.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let cpu = usize::try_from(libc::sched_getcpu()).unwrap_or(0);
        libc::CPU_SET(cpu, &mut set);
        let rc = libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(
            rc,
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn flood_leaves_established_flows_their_entries(flags: u32) {
    let family = Family::V4;
    let vip = sock(vip(family), 80);
    let flow = |port: u16| Frame::new(L4::Tcp, sock(client_ip(family), port), vip);
    let forward = if flags == SERVICE_NAT {
        ForwardNat
    } else {
        ForwardDsr
    };
    Lab::new("xdp").run(|dp| {
        stay_on_one_cpu();
        two_backend_service(dp, family, L4::Tcp, flags);
        dp.set_setting(SETTING_NEW_FLOWS_PER_CPU, 3);
        let established = flow(50000);
        let out = dp.run_counted(&tcp(&established, TCP_SYN).bytes());
        assert_eq!((out.action, out.reasons), (XDP_TX, vec![forward, FlowNew]));
        // Two more fill this second's allowance; the flood beyond it gets no entries.
        for port in 50001..50003 {
            let out = dp.run_counted(&tcp(&flow(port), TCP_SYN).bytes());
            assert_eq!(out.reasons, vec![forward, FlowNew], "port {port}");
        }
        for port in 50003..50010 {
            let syn = flow(port);
            let out = dp.run_counted(&tcp(&syn, TCP_SYN).bytes());
            assert_eq!(
                (out.action, out.reasons),
                (XDP_TX, vec![forward, FlowNew, FlowNotTracked]),
                "port {port}: forwarded, not tracked"
            );
            assert_eq!(dp.flow_entry(&syn.flow_key()), None, "port {port}");
        }
        assert_eq!(
            client(dp, &tcp(&established, TCP_ACK)),
            (0, vec![FlowEstablished]),
            "the established flow kept its entry"
        );
        // The untracked flow's next packet is placed the same way again.
        let (backend, reasons) = client(dp, &tcp(&flow(50004), TCP_ACK));
        assert_eq!((backend, reasons), (0, vec![FlowNew, FlowNotTracked]));
    });
}

#[test]
fn syn_flood_above_the_per_cpu_rate_is_not_tracked_dsr() {
    if !sluice_tests::privileged() {
        return;
    }
    flood_leaves_established_flows_their_entries(SERVICE_DSR);
}

#[test]
fn syn_flood_above_the_per_cpu_rate_is_not_tracked_nat() {
    if !sluice_tests::privileged() {
        return;
    }
    flood_leaves_established_flows_their_entries(SERVICE_NAT);
}

#[test]
fn a_source_past_its_new_flow_rate_is_dropped() {
    if !sluice_tests::privileged() {
        return;
    }
    let family = Family::V4;
    let vip = sock(vip(family), 80);
    let flooder = client_ip(family);
    let other: IpAddr = Ipv4Addr::new(10, 1, 0, 77).into();
    Lab::new("xdp").run(|dp| {
        two_backend_service(dp, family, L4::Tcp, SERVICE_DSR);
        two_backend_service(dp, family, L4::Udp, SERVICE_DSR);
        dp.set_setting(SETTING_SOURCE_RATE, 1);
        dp.set_setting(SETTING_SOURCE_BURST, 2);
        let syn = |ip: IpAddr, port: u16| tcp(&Frame::new(L4::Tcp, sock(ip, port), vip), TCP_SYN);
        for port in [41000, 41001] {
            let out = dp.run_counted(&syn(flooder, port).bytes());
            assert_eq!(
                (out.action, out.reasons),
                (XDP_TX, vec![ForwardDsr, FlowNew])
            );
        }
        let dropped = (XDP_DROP, vec![FlowNew, DropSourceRate]);
        let out = dp.run_counted(&syn(flooder, 41002).bytes());
        assert_eq!((out.action, out.reasons), dropped, "third SYN at once");
        let udp = Frame::new(L4::Udp, sock(flooder, 41003), vip);
        let out = dp.run_counted(&udp.bytes());
        assert_eq!(
            (out.action, out.reasons),
            dropped,
            "a new UDP flow draws too"
        );
        // Not openings: an established flow, and a TCP packet without SYN on no entry.
        let ack = tcp(&Frame::new(L4::Tcp, sock(flooder, 41000), vip), TCP_ACK);
        let out = dp.run_counted(&ack.bytes());
        assert_eq!(
            (out.action, out.reasons),
            (XDP_TX, vec![ForwardDsr, FlowEstablished])
        );
        let stray = tcp(&Frame::new(L4::Tcp, sock(flooder, 41004), vip), TCP_ACK);
        let out = dp.run_counted(&stray.bytes());
        assert_eq!(
            (out.action, out.reasons),
            (XDP_TX, vec![ForwardDsr, FlowNew])
        );
        // Another source has its own bucket.
        let out = dp.run_counted(&syn(other, 41005).bytes());
        assert_eq!(
            (out.action, out.reasons),
            (XDP_TX, vec![ForwardDsr, FlowNew])
        );
        // A second later, one more token.
        dp.age_source(flooder, 1);
        let out = dp.run_counted(&syn(flooder, 41006).bytes());
        assert_eq!(
            (out.action, out.reasons),
            (XDP_TX, vec![ForwardDsr, FlowNew])
        );
        let out = dp.run_counted(&syn(flooder, 41007).bytes());
        assert_eq!((out.action, out.reasons), dropped);
    });
}
