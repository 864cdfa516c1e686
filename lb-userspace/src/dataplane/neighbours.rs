//! Keeping next-hop MACs resolved for the XDP program's `bpf_fib_lookup`: the kernel only
//! resolves a neighbour when it sends to it, and the program forwards packets the kernel
//! never sees. A *managed* neighbour entry (Linux >= 5.16) makes the kernel resolve it and
//! keep it resolved.
//!
//! This drives `ip` (iproute2), already a requirement of the tests and of any host running
//! XDP, in batch mode: one `ip` for the route lookups of every new backend and one for their
//! neighbour entries, however many backends a reload brings. The entries it creates are
//! removed at shutdown.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Output, Stdio};

use tracing::{debug, warn};

/// A next hop: the address to resolve (the backend itself, or its gateway) and the device.
type NextHop = (IpAddr, String);

/// Managed neighbour entries this agent created, removed on drop.
#[derive(Default)]
pub struct Neighbours {
    /// Backends whose next hop is known to have a managed entry.
    covered: HashSet<IpAddr>,
    created: HashSet<NextHop>,
}

impl Neighbours {
    /// Makes sure the kernel keeps the next hop toward each of `backends` resolved. Work is
    /// done only for backends not seen before. Failures are logged, not fatal: the program
    /// then passes those backends' packets up, counted as `pass_no_neighbour`, until the
    /// neighbour resolves another way; the next call tries them again.
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
        let routes = match routes_to(&new) {
            Ok(routes) => routes,
            Err(error) => {
                warn!(%error, "could not look up routes to backends with `ip` (iproute2)");
                return;
            }
        };
        let mut wanted: Vec<NextHop> = Vec::new();
        for backend in &new {
            match routes.get(backend) {
                Some(hop) if self.created.contains(hop) => {
                    self.covered.insert(*backend);
                }
                Some(hop) => wanted.push(hop.clone()),
                None => warn!(%backend, "no route to the backend; its packets will be passed up"),
            }
        }
        wanted.sort_unstable();
        wanted.dedup();
        if !wanted.is_empty() {
            let failed = add_managed(&wanted);
            for hop in wanted {
                if !failed.contains(&hop.0) {
                    debug!(next_hop = %hop.0, dev = hop.1, "managed neighbour entry");
                    self.created.insert(hop);
                }
            }
        }
        for backend in new {
            if routes
                .get(&backend)
                .is_some_and(|hop| self.created.contains(hop))
            {
                self.covered.insert(backend);
            }
        }
    }
}

impl Neighbours {
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
        let routes = match routes_to(backends) {
            Ok(routes) => routes,
            Err(error) => {
                warn!(%error, "could not look up routes to backends with `ip` (iproute2)");
                return 0;
            }
        };
        let mut hops: Vec<&NextHop> = routes.values().collect();
        hops.sort_unstable();
        hops.dedup();
        let script: String = hops
            .iter()
            .map(|(addr, dev)| format!("neigh del {addr} dev {dev}\n"))
            .collect();
        if let Err(error) = ip_batch(&script) {
            warn!(%error, "could not remove managed neighbour entries");
            return 0;
        }
        hops.len()
    }
}

impl Drop for Neighbours {
    fn drop(&mut self) {
        if self.created.is_empty() {
            return;
        }
        let script: String = self
            .created
            .drain()
            .map(|(addr, dev)| format!("neigh del {addr} dev {dev}\n"))
            .collect();
        let _ = ip_batch(&script);
    }
}

/// The kernel's next hop toward `addr` (the FIB lookup the XDP program makes): its address
/// (`addr` itself when on-link), device, and link-layer address once the kernel has
/// resolved it. For `sluice explain`.
pub fn next_hop_of(addr: IpAddr) -> Option<(IpAddr, String, Option<String>)> {
    let (via, dev) = routes_to(&[addr]).ok()?.remove(&addr)?;
    let out = Command::new("ip")
        .args(["neigh", "show", &via.to_string(), "dev", &dev])
        .output()
        .ok()?;
    // `10.0.0.1 lladdr aa:bb:cc:dd:ee:ff REACHABLE` (no lladdr while unresolved).
    let text = String::from_utf8_lossy(&out.stdout);
    let mac = text
        .split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .map(str::to_owned);
    Some((via, dev, mac))
}

/// The next hop of each address `ip route get` finds a route for.
fn routes_to(addrs: &[IpAddr]) -> Result<HashMap<IpAddr, NextHop>, String> {
    let script: String = addrs.iter().map(|a| format!("route get {a}\n")).collect();
    let out = ip_batch(&script)?;
    Ok(parse_routes(&String::from_utf8_lossy(&out.stdout)))
}

/// Parses `ip -o route get` lines: `[type] DEST [via GW] dev DEV ...`, one per route found
/// (lookups that failed print nothing there).
fn parse_routes(text: &str) -> HashMap<IpAddr, NextHop> {
    let mut routes = HashMap::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        // The destination is the first word that is an address (a route type may come first).
        let Some(dest) = words.iter().take(2).find_map(|w| w.parse::<IpAddr>().ok()) else {
            continue;
        };
        let after = |key: &str| {
            words
                .iter()
                .position(|w| *w == key)
                .and_then(|i| words.get(i + 1))
        };
        let Some(dev) = after("dev") else {
            continue;
        };
        let next_hop = after("via")
            .and_then(|via| via.parse().ok())
            .unwrap_or(dest);
        routes.insert(dest, (next_hop, dev.to_string()));
    }
    routes
}

/// Adds managed entries for `hops`; returns the next hops whose entry failed.
fn add_managed(hops: &[NextHop]) -> HashSet<IpAddr> {
    let script: String = hops
        .iter()
        .map(|(addr, dev)| format!("neigh replace {addr} dev {dev} managed\n"))
        .collect();
    match ip_batch(&script) {
        Ok(out) if out.status.success() => HashSet::new(),
        Ok(out) => {
            // `ip -batch` names failed commands by line number: `Command failed -:3`.
            let stderr = String::from_utf8_lossy(&out.stderr);
            let failed: HashSet<IpAddr> = stderr
                .lines()
                .filter_map(|l| {
                    l.rsplit_once("-:")
                        .and_then(|(_, n)| n.trim().parse::<usize>().ok())
                })
                .filter_map(|line| hops.get(line.checked_sub(1)?).map(|h| h.0))
                .collect();
            if stderr.contains("No buffer space available") {
                warn!(
                    entries = hops.len(),
                    "the kernel's neighbour table is full: raise \
                     net.ipv4.neigh.default.gc_thresh3 (and net.ipv6.neigh.default.gc_thresh3) \
                     above the number of on-link backends"
                );
            }
            warn!(
                error = %stderr.trim(),
                "could not add some managed neighbour entries (needs Linux >= 5.16)"
            );
            if failed.is_empty() {
                hops.iter().map(|h| h.0).collect()
            } else {
                failed
            }
        }
        Err(error) => {
            warn!(%error, "could not run `ip` (iproute2)");
            hops.iter().map(|h| h.0).collect()
        }
    }
}

/// Runs `ip -o -force -batch -` on `script`: every line runs even if some fail.
fn ip_batch(script: &str) -> Result<Output, String> {
    let mut child = Command::new("ip")
        .args(["-o", "-force", "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting `ip`: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin for `ip`")?;
    // Written from another thread: `ip` answers as it reads, and would block on a full
    // stdout pipe while this thread still writes.
    let script = script.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(script.as_bytes()));
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for `ip`: {e}"))?;
    match writer.join() {
        Ok(Ok(())) => Ok(out),
        Ok(Err(e)) => Err(format!("writing to `ip`: {e}")),
        Err(_) => Err("the thread writing to `ip` panicked".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_lines_give_next_hops() {
        let text = "local 127.0.0.1 dev lo src 127.0.0.1 uid 0 \\    cache <local> \n\
                    10.250.3.4 via 192.0.2.1 dev eth0 src 192.0.2.2 uid 0 \\    cache \n\
                    fd00:31::11 from :: dev veth1 proto kernel src fd00:31::2 metric 256 pref medium\n\
                    garbage line\n";
        let routes = parse_routes(text);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(routes.len(), 3);
        assert_eq!(
            routes[&ip("127.0.0.1")],
            (ip("127.0.0.1"), "lo".to_string())
        );
        assert_eq!(
            routes[&ip("10.250.3.4")],
            (ip("192.0.2.1"), "eth0".to_string())
        );
        assert_eq!(
            routes[&ip("fd00:31::11")],
            (ip("fd00:31::11"), "veth1".to_string())
        );
    }

    #[test]
    fn batch_lookups_answer_for_every_routable_address() {
        // Loopback addresses always have a route, even in a fresh namespace.
        let addrs: Vec<IpAddr> = (1..=300u32)
            .map(|i| IpAddr::from([127, 0, (i >> 8) as u8, i as u8]))
            .collect();
        // iproute2 is a requirement of the agent, so of its tests too.
        let routes = routes_to(&addrs).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(routes.len(), addrs.len(), "one route per address");
        for addr in addrs {
            assert_eq!(routes[&addr].0, addr, "loopback routes are on-link");
        }
    }
}
