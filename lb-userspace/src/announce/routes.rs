//! The VIP routes in the kernel table the BGP daemon exports: one `blackhole` route per
//! announced VIP, added and removed with `ip` (iproute2) in batch mode, as the neighbour
//! entries are. The table is never used to forward (no `ip rule` looks it up); the route's
//! presence is the announcement.

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use thiserror::Error;

/// The `proto` number on every route the agent writes, so it finds its own routes (a stale
/// set left by a killed agent is flushed at start) and the daemon can tell them apart.
/// Unassigned in `/etc/iproute2/rt_protos`; 12 is BIRD's own and must not be used.
pub const ROUTE_PROTOCOL: u8 = 201;

/// A failed change of the VIP table.
#[derive(Debug, Error)]
pub enum RouteError {
    /// `ip` could not be run.
    #[error("running `ip` (iproute2) to {action}")]
    Spawn {
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// `ip` ran and reported a failure.
    #[error("`ip` failed to {action}: {stderr}")]
    Failed {
        action: &'static str,
        stderr: String,
    },
}

/// Where VIP routes go: the kernel, or an in-memory stand-in in unit tests.
pub trait RouteTable: Send {
    /// Adds (or keeps) the route of each of `vips`.
    fn add(&mut self, vips: &[IpAddr]) -> Result<(), RouteError>;
    /// Removes the route of each of `vips`; a route already gone is not an error.
    fn remove(&mut self, vips: &[IpAddr]) -> Result<(), RouteError>;
    /// Removes every route the agent owns in the table, whoever added it.
    fn flush(&mut self) -> Result<(), RouteError>;
}

/// The kernel routing table `table`, changed through `ip`.
pub struct KernelTable {
    table: u32,
}

impl KernelTable {
    /// The table with this id.
    pub fn new(table: u32) -> Self {
        Self { table }
    }

    fn line(&self, verb: &str, vip: IpAddr) -> String {
        let len = if vip.is_ipv4() { 32 } else { 128 };
        format!(
            "route {verb} blackhole {vip}/{len} table {} proto {ROUTE_PROTOCOL}\n",
            self.table
        )
    }
}

impl RouteTable for KernelTable {
    fn add(&mut self, vips: &[IpAddr]) -> Result<(), RouteError> {
        let script: String = vips.iter().map(|vip| self.line("replace", *vip)).collect();
        ip_batch(&script, "add VIP routes")
    }

    fn remove(&mut self, vips: &[IpAddr]) -> Result<(), RouteError> {
        for vip in vips {
            // One at a time: a route already gone fails its line, and must not hide the rest.
            if let Err(err) = ip_batch(&self.line("del", *vip), "remove a VIP route")
                && !is_missing(&err)
            {
                return Err(err);
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), RouteError> {
        let (table, proto) = (self.table.to_string(), ROUTE_PROTOCOL.to_string());
        for family in ["-4", "-6"] {
            let args = [family, "route", "flush", "table", &table, "proto", &proto];
            let output = Command::new("ip")
                .args(args)
                .stdin(Stdio::null())
                .output()
                .map_err(|source| RouteError::Spawn {
                    action: "flush stale VIP routes",
                    source,
                })?;
            let err = RouteError::Failed {
                action: "flush stale VIP routes",
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            };
            // A table that does not exist yet holds nothing to flush.
            if !output.status.success() && !is_missing(&err) {
                return Err(err);
            }
        }
        Ok(())
    }
}

/// Whether `ip` failed because the route, or the whole table, was not there.
fn is_missing(err: &RouteError) -> bool {
    matches!(err, RouteError::Failed { stderr, .. }
        if stderr.contains("No such process") || stderr.contains("does not exist"))
}

/// Runs `ip -batch -` with `script` on stdin.
fn ip_batch(script: &str, action: &'static str) -> Result<(), RouteError> {
    if script.is_empty() {
        return Ok(());
    }
    let spawn = |source| RouteError::Spawn { action, source };
    let mut child = Command::new("ip")
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).map_err(spawn)?;
    }
    let output = child.wait_with_output().map_err(spawn)?;
    if output.status.success() {
        Ok(())
    } else {
        Err(RouteError::Failed {
            action,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
pub(crate) mod fake {
    use std::collections::BTreeSet;
    use std::net::IpAddr;
    use std::sync::{Arc, Mutex};

    use super::{RouteError, RouteTable};

    /// An in-memory table whose contents the test can read while the announcer owns it.
    #[derive(Clone, Default)]
    pub struct FakeTable(pub Arc<Mutex<BTreeSet<IpAddr>>>);

    impl FakeTable {
        pub fn routes(&self) -> Vec<IpAddr> {
            self.lock().iter().copied().collect()
        }

        fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<IpAddr>> {
            self.0.lock().unwrap_or_else(|p| p.into_inner())
        }
    }

    impl RouteTable for FakeTable {
        fn add(&mut self, vips: &[IpAddr]) -> Result<(), RouteError> {
            self.lock().extend(vips.iter().copied());
            Ok(())
        }
        fn remove(&mut self, vips: &[IpAddr]) -> Result<(), RouteError> {
            let mut routes = self.lock();
            for vip in vips {
                routes.remove(vip);
            }
            Ok(())
        }
        fn flush(&mut self) -> Result<(), RouteError> {
            self.lock().clear();
            Ok(())
        }
    }
}
