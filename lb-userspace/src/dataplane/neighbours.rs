//! Keeping next-hop MACs resolved for the XDP program's `bpf_fib_lookup`: the kernel only
//! resolves a neighbour when it sends to it, and the program forwards packets the kernel
//! never sees. A *managed* neighbour entry (Linux >= 5.16) makes the kernel resolve it and
//! keep it resolved.
//!
//! Route lookups and entries go through netlink ([`crate::netlink`]), one socket per call,
//! so the agent needs no iproute2. The entries it creates are removed at shutdown unless the
//! data path outlives the agent.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use tracing::{debug, warn};

use crate::netlink::{Netlink, NextHop};

/// A next hop's entry: the address to resolve (the backend itself, or its gateway) and the
/// output interface's index.
type Entry = (IpAddr, u32);

/// Managed neighbour entries this agent created, removed on drop.
#[derive(Default)]
pub struct Neighbours {
    /// Backends whose next hop is known to have a managed entry.
    covered: HashSet<IpAddr>,
    created: HashSet<Entry>,
}

impl Neighbours {
    /// Makes sure the kernel keeps the next hop toward each of `backends` resolved. Work is
    /// done only for backends not seen before. Failures are logged, not fatal: the program
    /// then passes those backends' packets up, counted as `pass_no_neighbour`, until the
    /// neighbour resolves another way; the next call tries them again. Once the kernel's
    /// table is full the rest are not tried: each would fail the same way, and with
    /// thousands of backends those futile route lookups and entries took most of a reload.
    pub fn ensure(&mut self, backends: impl IntoIterator<Item = IpAddr>) {
        let mut new: Vec<IpAddr> = backends
            .into_iter()
            .filter(|b| !self.covered.contains(b))
            .collect();
        new.sort_unstable();
        new.dedup();
        if new.is_empty() {
            return;
        }
        let mut netlink = match Netlink::open() {
            Ok(netlink) => netlink,
            Err(error) => {
                warn!(%error, "could not look up routes to backends");
                return;
            }
        };
        // One warning for however many fail.
        let (mut failed, mut first_error, mut untried) = (0usize, None, None);
        for (done, backend) in new.iter().enumerate() {
            let Some(hop) = route_to(&mut netlink, *backend) else {
                continue;
            };
            let wanted = entry(&hop);
            if !self.created.contains(&wanted) {
                match netlink.replace_managed_neighbour(hop.neighbour(), hop.ifindex) {
                    Ok(()) => {
                        debug!(next_hop = %hop.neighbour(), dev = hop.device, "managed neighbour entry");
                        self.created.insert(wanted);
                    }
                    Err(error) => {
                        failed += 1;
                        let full = error.errno() == Some(libc::ENOBUFS);
                        first_error.get_or_insert(error);
                        if full {
                            untried = Some(new.len() - done - 1);
                            break;
                        }
                        continue;
                    }
                }
            }
            self.covered.insert(*backend);
        }
        if let Some(error) = first_error {
            warn!(
                %error,
                failed,
                "could not add managed neighbour entries (needs Linux >= 5.16); the first error"
            );
        }
        if let Some(untried) = untried {
            warn!(
                untried,
                "the kernel's neighbour table is full (the backends after the first failure were \
                 not tried): raise \
                 net.ipv4.neigh.default.gc_thresh3 (and net.ipv6.neigh.default.gc_thresh3) \
                 above the number of on-link backends"
            );
        }
    }

    /// Leaves the entries in place for the data path that outlives this agent: dropping
    /// `self` then removes nothing. The next agent takes them over, `sluice detach` removes
    /// them.
    pub fn leave_in_place(&mut self) {
        self.created.clear();
        self.covered.clear();
    }

    /// Removes the entries of the next hops toward `backends`: what an agent made for them,
    /// found again by `sluice detach` from the pinned backend map. Returns how many.
    pub fn remove_for(backends: &[IpAddr]) -> usize {
        let mut netlink = match Netlink::open() {
            Ok(netlink) => netlink,
            Err(error) => {
                warn!(%error, "could not remove managed neighbour entries");
                return 0;
            }
        };
        let mut entries: Vec<Entry> = routes_to(&mut netlink, backends)
            .values()
            .map(entry)
            .collect();
        entries.sort_unstable();
        entries.dedup();
        remove(&mut netlink, entries)
    }
}

impl Drop for Neighbours {
    fn drop(&mut self) {
        if self.created.is_empty() {
            return;
        }
        if let Ok(mut netlink) = Netlink::open() {
            remove(&mut netlink, self.created.drain());
        }
    }
}

/// The kernel's next hop toward `addr` (the FIB lookup the XDP program makes): its address
/// (`addr` itself when on-link), device, and link-layer address once the kernel has
/// resolved it. For `sluice explain`.
pub fn next_hop_of(addr: IpAddr) -> Option<(IpAddr, String, Option<String>)> {
    let mut netlink = Netlink::open().ok()?;
    let hop = netlink.route_to(addr).ok()?;
    let mac = match netlink.neighbour(hop.neighbour(), hop.ifindex) {
        Ok(found) => found.and_then(|entry| entry.link_address_text()),
        Err(error) => {
            debug!(%error, "no neighbour entry for explain");
            None
        }
    };
    Some((hop.neighbour(), hop.device, mac))
}

/// The next hop of each of `addrs` the kernel has a route for; the others are logged.
fn routes_to(netlink: &mut Netlink, addrs: &[IpAddr]) -> HashMap<IpAddr, NextHop> {
    addrs
        .iter()
        .filter_map(|addr| Some((*addr, route_to(netlink, *addr)?)))
        .collect()
}

/// The next hop toward `addr`, or `None` (logged) when the kernel has no route to it.
fn route_to(netlink: &mut Netlink, addr: IpAddr) -> Option<NextHop> {
    match netlink.route_to(addr) {
        Ok(hop) => Some(hop),
        Err(error) => {
            warn!(
                backend = %addr,
                %error,
                "no route to the backend; its packets will be passed up"
            );
            None
        }
    }
}

/// Deletes `entries`; returns how many were there to delete.
fn remove(netlink: &mut Netlink, entries: impl IntoIterator<Item = Entry>) -> usize {
    let mut removed = 0;
    for (address, ifindex) in entries {
        match netlink.delete_neighbour(address, ifindex) {
            Ok(()) => removed += 1,
            Err(error) if error.errno() == Some(libc::ENOENT) => {}
            Err(error) => warn!(%error, "could not remove a neighbour entry"),
        }
    }
    removed
}

fn entry(hop: &NextHop) -> Entry {
    (hop.neighbour(), hop.ifindex)
}
