//! The VIP routes in the kernel table the BGP daemon exports: one `blackhole` route per
//! announced VIP, added and removed through netlink ([`crate::netlink`]), as the neighbour
//! entries are. The table is never used to forward (no `ip rule` looks it up); the route's
//! presence is the announcement.

use std::net::IpAddr;

use thiserror::Error;

use crate::netlink::{Netlink, NetlinkError, VipRoute};

/// The `proto` number on every route the agent writes, so it finds its own routes (a stale
/// set left by a killed agent is flushed at start) and the daemon can tell them apart.
/// Unassigned in `/etc/iproute2/rt_protos`; 12 is BIRD's own and must not be used.
pub const ROUTE_PROTOCOL: u8 = 201;

/// A failed change of the VIP table.
#[derive(Debug, Error)]
pub enum RouteError {
    /// The kernel refused a change, or could not be asked: which change, of which VIP (or
    /// table), and the kernel's answer.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
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

/// The kernel routing table `table`, changed through netlink.
pub struct KernelTable {
    table: u32,
    /// Opened at first use and kept: the announcer changes the table on every health change.
    netlink: Option<Netlink>,
}

impl KernelTable {
    /// The table with this id.
    pub fn new(table: u32) -> Self {
        Self {
            table,
            netlink: None,
        }
    }

    fn route(&self, vip: IpAddr) -> VipRoute {
        VipRoute {
            vip,
            table: self.table,
            protocol: ROUTE_PROTOCOL,
        }
    }

    /// Runs `change` on the socket, opening it first if needed. A socket that failed is
    /// dropped, so the next change starts on a fresh one.
    fn with_netlink<T>(
        &mut self,
        change: impl FnOnce(&mut Netlink, &Self) -> Result<T, NetlinkError>,
    ) -> Result<T, RouteError> {
        let mut netlink = match self.netlink.take() {
            Some(netlink) => netlink,
            None => Netlink::open()?,
        };
        let result = change(&mut netlink, self)?;
        self.netlink = Some(netlink);
        Ok(result)
    }
}

impl RouteTable for KernelTable {
    fn add(&mut self, vips: &[IpAddr]) -> Result<(), RouteError> {
        self.with_netlink(|netlink, table| {
            vips.iter()
                .try_for_each(|vip| netlink.replace_vip_route(table.route(*vip)))
        })
    }

    fn remove(&mut self, vips: &[IpAddr]) -> Result<(), RouteError> {
        // A route already gone is not an error and does not stop the others.
        self.with_netlink(|netlink, table| {
            vips.iter()
                .try_for_each(|vip| netlink.delete_vip_route(table.route(*vip)).map(drop))
        })
    }

    fn flush(&mut self) -> Result<(), RouteError> {
        let table = self.table;
        // A table that does not exist yet holds nothing to flush.
        self.with_netlink(|netlink, _| netlink.flush_routes(table, ROUTE_PROTOCOL).map(drop))
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
