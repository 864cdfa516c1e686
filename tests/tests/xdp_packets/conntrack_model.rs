//! Random sequences of client packets, backend replies, ageing and ring changes on one NAT
//! TCP flow, run through the program and through a small model of the connection table's
//! rules written here from the specification; after every step both must agree on the counter
//! moved, the backend chosen and the entry's state.

use lb_common::conntrack::{
    CT_FIN_BACKEND, CT_FIN_CLIENT, CT_RST, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN,
};
use lb_common::service::SERVICE_NAT;
use lb_common::stats::Reason::{self, FlowEstablished, FlowExpired, FlowNew, FlowReopened};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::frames::{Frame, L4, TCP_PSH, sock};
use crate::lab::{Dataplane, Family, Lab, XDP_TX, client_ip, vip};
use crate::tcp_states::{CLOSING_S, TCP_IDLE_S, client, reply, ring_to, tcp, two_backend_service};

#[derive(Clone, Copy, Debug)]
enum Step {
    Client(u8),
    Backend(u8),
    /// Seconds; even, so no sum lands within a second of the odd timeouts.
    Age(u32),
    /// Points the ring at backend index 0 or 1.
    Ring(usize),
}

fn step() -> impl Strategy<Value = Step> {
    let client_flags = prop::sample::select(vec![
        TCP_SYN,
        TCP_SYN | TCP_ACK,
        TCP_ACK,
        TCP_ACK | TCP_PSH,
        TCP_FIN | TCP_ACK,
        TCP_RST,
        TCP_RST | TCP_ACK,
    ]);
    let backend_flags = prop::sample::select(vec![TCP_ACK, TCP_FIN | TCP_ACK, TCP_RST]);
    prop_oneof![
        4 => client_flags.prop_map(Step::Client),
        2 => backend_flags.prop_map(Step::Backend),
        1 => prop::sample::select(vec![2u32, 4, 100, 102]).prop_map(Step::Age),
        1 => (0usize..2).prop_map(Step::Ring),
    ]
}

/// The model: the entry of the one flow, if any.
#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    backend: usize,
    fin_client: bool,
    fin_backend: bool,
    rst: bool,
    /// Seconds since a packet last refreshed it.
    age: u32,
}

impl Entry {
    fn closing(&self) -> bool {
        self.rst || (self.fin_client && self.fin_backend)
    }

    fn expired(&self) -> bool {
        let timeout = if self.closing() {
            CLOSING_S
        } else {
            TCP_IDLE_S
        };
        self.age > timeout
    }

    fn bits(&self) -> u8 {
        u8::from(self.fin_client) * CT_FIN_CLIENT
            + u8::from(self.fin_backend) * CT_FIN_BACKEND
            + u8::from(self.rst) * CT_RST
    }

    fn client_packet(&mut self, flags: u8) {
        self.fin_client |= flags & TCP_FIN != 0;
        self.rst |= flags & TCP_RST != 0;
        self.age = 0;
    }
}

#[derive(Default)]
struct Model {
    entry: Option<Entry>,
    ring: usize,
}

impl Model {
    /// The counter a client packet moves and the backend it goes to.
    fn client(&mut self, flags: u8) -> (usize, Reason) {
        let reason = match &mut self.entry {
            None => FlowNew,
            Some(e) if e.expired() => FlowExpired,
            Some(e) if e.closing() && flags & (TCP_SYN | TCP_ACK) == TCP_SYN => FlowReopened,
            Some(e) => {
                e.client_packet(flags);
                return (e.backend, FlowEstablished);
            }
        };
        let mut fresh = Entry {
            backend: self.ring,
            ..Entry::default()
        };
        fresh.client_packet(flags);
        self.entry = Some(fresh);
        (self.ring, reason)
    }

    fn backend(&mut self, flags: u8) {
        if let Some(e) = &mut self.entry {
            let before = e.bits();
            e.fin_backend |= flags & TCP_FIN != 0;
            e.rst |= flags & TCP_RST != 0;
            if e.bits() != before {
                e.age = 0;
            }
        }
    }
}

fn run_sequence(dp: &mut Dataplane, flow: &Frame, steps: &[Step]) -> Result<(), TestCaseError> {
    let key = flow.flow_key();
    let mut model = Model::default();
    dp.forget_flow(&key);
    ring_to(dp, 0);
    for (n, step) in steps.iter().enumerate() {
        match *step {
            Step::Client(flags) => {
                let (backend, reason) = model.client(flags);
                let got = client(dp, &tcp(flow, flags));
                prop_assert_eq!(got, (backend, vec![reason]), "step {}: {:?}", n, step);
            }
            Step::Backend(flags) => {
                // Only a flow with an entry has a backend to answer.
                let Some(entry) = model.entry else { continue };
                model.backend(flags);
                let out = dp.run_counted(&reply(flow, entry.backend, Family::V4, flags).bytes());
                prop_assert_eq!(out.action, XDP_TX, "step {}: {:?}", n, step);
            }
            Step::Age(seconds) => {
                let Some(entry) = &mut model.entry else {
                    continue;
                };
                entry.age += seconds;
                dp.age_flow(&key, f64::from(seconds));
            }
            Step::Ring(i) => {
                model.ring = i;
                ring_to(dp, i);
            }
        }
        let want = model.entry.map(|e| e.bits());
        let got = dp.flow_entry(&key).map(|e| e.state);
        prop_assert_eq!(got, want, "state after step {}: {:?}", n, step);
    }
    Ok(())
}

#[test]
fn conntrack_matches_its_model_on_random_sequences() {
    if !sluice_tests::privileged() {
        return;
    }
    let family = Family::V4;
    let flow = Frame::new(
        L4::Tcp,
        sock(client_ip(family), 40100),
        sock(vip(family), 80),
    );
    Lab::new("xdp").run(|dp| {
        two_backend_service(dp, family, L4::Tcp, SERVICE_NAT);
        let mut runner = TestRunner::new(Config {
            cases: 64,
            failure_persistence: None,
            ..Config::default()
        });
        // The runner wants an `Fn`; the cases run one after another.
        let dp = std::cell::RefCell::new(dp);
        let result = runner.run(&prop::collection::vec(step(), 1..40), |steps| {
            run_sequence(&mut dp.borrow_mut(), &flow, &steps)
        });
        if let Err(failure) = result {
            panic!("the program and the model disagree: {failure}");
        }
    });
}
