//! Table-driven frame checks: (description, frame, verdict, counters), run all at once so a
//! failure lists every case that went wrong.

use lb_common::stats::Reason;

use crate::frames::hex;
use crate::lab::{Dataplane, XDP_PASS};

pub struct Case {
    pub what: &'static str,
    pub frame: Vec<u8>,
    pub action: u32,
    /// Every counter the frame must move besides `Seen`, in slot order.
    pub reasons: Vec<Reason>,
}

/// A frame passed up for `reason` before any flow lookup.
pub fn pass(what: &'static str, frame: Vec<u8>, reason: Reason) -> Case {
    Case {
        what,
        frame,
        action: XDP_PASS,
        reasons: vec![reason],
    }
}

/// A frame of a new flow for a service: Maglev runs (`FlowNew`), then `reason` decides.
pub fn placed(what: &'static str, frame: Vec<u8>, action: u32, reason: Reason) -> Case {
    Case {
        what,
        frame,
        action,
        reasons: vec![reason, Reason::FlowNew],
    }
}

/// Runs every case; collects all mismatches before failing, so one run shows them all.
pub fn check(dp: &Dataplane, cases: &[Case]) {
    let mut failures = Vec::new();
    for case in cases {
        let out = dp.run_counted(&case.frame);
        if out.action != case.action || out.reasons != case.reasons {
            failures.push(format!(
                "{}: got verdict {} counted {:?}; want verdict {} counted {:?}",
                case.what, out.action, out.reasons, case.action, case.reasons
            ));
        } else if case.action == XDP_PASS && out.frame != case.frame {
            failures.push(format!(
                "{}: the passed frame was modified\n  input: {}\n output: {}",
                case.what,
                hex(&case.frame),
                hex(&out.frame)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
