//! Keeping next-hop MACs resolved for the XDP program's `bpf_fib_lookup`: the kernel only
//! resolves a neighbour when it sends to it, and the program forwards packets the kernel
//! never sees. A *managed* neighbour entry (Linux >= 5.16) makes the kernel resolve it and
//! keep it resolved.
//!
//! This drives `ip` (iproute2), already a requirement of the tests and of any host running
//! XDP; the entries it creates are removed at shutdown.

use std::net::IpAddr;
use std::process::Command;

use tracing::{debug, warn};

/// Managed neighbour entries this agent created, removed on drop.
#[derive(Default)]
pub struct Neighbours {
    created: Vec<(IpAddr, String)>,
}

impl Neighbours {
    /// Makes sure the kernel keeps the next hop toward `backend` resolved. Failures are
    /// logged, not fatal: the program then passes the backend's packets up, counted as
    /// `pass_no_neighbour`, until the neighbour resolves another way.
    pub fn ensure(&mut self, backend: IpAddr) {
        if self.created.iter().any(|(addr, _)| *addr == backend) {
            return;
        }
        let Some((next_hop, dev)) = route_to(backend) else {
            warn!(%backend, "no route to the backend; its packets will be passed up");
            return;
        };
        let status = Command::new("ip")
            .args([
                "neigh",
                "replace",
                &next_hop.to_string(),
                "dev",
                &dev,
                "managed",
            ])
            .output();
        match status {
            Ok(out) if out.status.success() => {
                debug!(%backend, %next_hop, dev, "managed neighbour entry");
                self.created.push((next_hop, dev));
            }
            Ok(out) => warn!(
                %backend,
                error = %String::from_utf8_lossy(&out.stderr).trim(),
                "could not add a managed neighbour entry (needs Linux >= 5.16)"
            ),
            Err(e) => warn!(%backend, error = %e, "could not run `ip` (iproute2)"),
        }
    }
}

impl Drop for Neighbours {
    fn drop(&mut self) {
        for (addr, dev) in self.created.drain(..) {
            let _ = Command::new("ip")
                .args(["neigh", "del", &addr.to_string(), "dev", &dev])
                .output();
        }
    }
}

/// The next hop (the address itself, or the gateway) and device toward `addr`.
fn route_to(addr: IpAddr) -> Option<(IpAddr, String)> {
    let out = Command::new("ip")
        .args(["route", "get", &addr.to_string()])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let words: Vec<&str> = text.split_whitespace().collect();
    let after = |key: &str| {
        words
            .iter()
            .position(|w| *w == key)
            .and_then(|i| words.get(i + 1))
            .map(|w| w.to_string())
    };
    let dev = after("dev")?;
    let next_hop = after("via")
        .and_then(|via| via.parse().ok())
        .unwrap_or(addr);
    Some((next_hop, dev))
}
