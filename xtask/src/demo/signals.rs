//! Ctrl-C (SIGINT), SIGTERM and SIGHUP become a flag the demo checks between steps, so it
//! always tears down what it built instead of dying half-way with namespaces left behind.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

const SIGNALS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// Set once a stop signal arrived.
#[derive(Clone, Debug, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    /// Whether the user asked the demo to stop.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Routes the stop signals to a flag. Call before starting any thread: the signals are
/// blocked in the calling thread, threads started later inherit that, and one thread waits
/// for them. Children inherit the mask too: a child that must see the signals unblocks them
/// (the agent's runner, `sluice_tests::AgentProcess`, does).
pub fn install() -> Result<StopFlag> {
    let mut set = SigSet::empty();
    for signal in SIGNALS {
        // A signal ignored by whoever started us (nohup, a parent that ignores SIGINT while
        // it waits) would never reach the waiting thread.
        // SAFETY: SIG_DFL installs no handler code, so nothing runs in signal context.
        unsafe { nix::sys::signal::signal(signal, SigHandler::SigDfl) }
            .with_context(|| format!("resetting the disposition of {signal}"))?;
        set.add(signal);
    }
    set.thread_block().context("blocking the stop signals")?;
    let flag = StopFlag::default();
    let raised = flag.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            while let Ok(signal) = set.wait() {
                // The first one shows as the teardown starting; printing here would land in
                // the middle of the live panel.
                if raised.is_set() {
                    eprintln!("{signal} again: still tearing down, one moment");
                }
                raised.set();
            }
        })
        .context("starting the signal thread")?;
    Ok(flag)
}

/// Keeps this process alive through the stop signals while a child (sudo running the demo
/// as root) handles them: a terminal's Ctrl-C reaches both, and the parent must outlive the
/// child's teardown rather than return the prompt in the middle of it. A handler, unlike
/// ignoring the signal, is reset by exec, so the child sees the signals as usual.
pub fn survive_while_child_runs() -> Result<()> {
    extern "C" fn nothing(_: libc::c_int) {}
    let action = SigAction::new(
        SigHandler::Handler(nothing),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in SIGNALS {
        // SAFETY: the handler does nothing, so it is async-signal-safe.
        unsafe { sigaction(signal, &action) }
            .with_context(|| format!("installing a handler for {signal}"))?;
    }
    Ok(())
}
