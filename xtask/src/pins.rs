//! Where the agents the demo and the bench start pin their data path: a folder of their own
//! under bpffs, removed by `--detach-on-exit` when they stop, so that no later run adopts a
//! data path whose namespaces and interfaces are gone.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// `/sys/fs/bpf/sluice-<what>-<pid>-<n>`: a pin folder no other agent uses.
pub fn unique_pin_dir(what: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Relaxed);
    format!("/sys/fs/bpf/sluice-{what}-{}-{n}", std::process::id())
}
