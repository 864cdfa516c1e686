//! Routes: the kernel's lookup for one destination (RTM_GETROUTE, what `ip route get`
//! asks), and the blackhole routes of announced VIPs in a table of their own.

use std::ffi::CStr;
use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
    RouteVia,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{Exchange, Netlink, NetlinkError, Operation, Subject};

/// Where the kernel sends packets for a destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextHop {
    /// The destination looked up.
    pub destination: IpAddr,
    /// The gateway, for a routed destination; `None` when it is on-link.
    pub gateway: Option<IpAddr>,
    /// The output interface's index.
    pub ifindex: u32,
    /// The output interface's name.
    pub device: String,
    /// The source address the kernel would use.
    pub source: Option<IpAddr>,
    /// The route's type (`Unicast`, `Local`, ...).
    pub kind: RouteType,
}

impl NextHop {
    /// The address whose neighbour entry the packets need: the gateway, or the destination.
    pub fn neighbour(&self) -> IpAddr {
        self.gateway.unwrap_or(self.destination)
    }
}

/// One announced VIP's route: `blackhole VIP/32 table TABLE proto PROTOCOL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipRoute {
    /// The VIP (a host route: /32 or /128).
    pub vip: IpAddr,
    /// The routing table.
    pub table: u32,
    /// The `proto` number that marks the agent's routes.
    pub protocol: u8,
}

impl Netlink {
    /// The kernel's route to `destination`, as a locally sent packet would take it.
    pub fn route_to(&mut self, destination: IpAddr) -> Result<NextHop, NetlinkError> {
        let subject = Subject::Address(destination);
        let mut message = RouteMessage::default();
        set_destination(&mut message, destination);
        let replies = self.request(
            Exchange::Lookup,
            RouteNetlinkMessage::GetRoute(message),
            0,
            Operation::RouteLookup,
            subject,
        )?;
        let answer = |detail: &str| NetlinkError::Answer {
            operation: Operation::RouteLookup,
            subject,
            detail: detail.into(),
        };
        let route = replies
            .into_iter()
            .find_map(|reply| match reply {
                RouteNetlinkMessage::NewRoute(route) => Some(route),
                _ => None,
            })
            .ok_or_else(|| answer("no route in the answer"))?;
        let (mut gateway, mut ifindex, mut source) = (None, None, None);
        for attribute in &route.attributes {
            match attribute {
                RouteAttribute::Gateway(address) => gateway = ip_of(address),
                RouteAttribute::Via(RouteVia::Inet(v4)) => gateway = Some(IpAddr::V4(*v4)),
                RouteAttribute::Via(RouteVia::Inet6(v6)) => gateway = Some(IpAddr::V6(*v6)),
                RouteAttribute::Oif(index) => ifindex = Some(*index),
                RouteAttribute::PrefSource(address) => source = ip_of(address),
                _ => {}
            }
        }
        let ifindex = ifindex.ok_or_else(|| answer("the route names no output interface"))?;
        let device = interface_name(ifindex)
            .ok_or_else(|| answer(&format!("output interface {ifindex} has no name")))?;
        Ok(NextHop {
            destination,
            gateway,
            ifindex,
            device,
            source,
            kind: route.header.kind,
        })
    }

    /// Adds `route`, or replaces a route to the same VIP in its table.
    pub fn replace_vip_route(&mut self, route: VipRoute) -> Result<(), NetlinkError> {
        let mut message = vip_message(route);
        message.header.scope = RouteScope::Universe;
        self.request(
            Exchange::Change,
            RouteNetlinkMessage::NewRoute(message),
            NLM_F_CREATE | NLM_F_REPLACE,
            Operation::VipRouteAdd,
            Subject::Address(route.vip),
        )?;
        Ok(())
    }

    /// Removes `route`; `Ok(false)` when it (or its table) was not there.
    pub fn delete_vip_route(&mut self, route: VipRoute) -> Result<bool, NetlinkError> {
        let mut message = vip_message(route);
        // Any scope: the route is named by table, prefix, type and protocol.
        message.header.scope = RouteScope::NoWhere;
        let answer = self.request(
            Exchange::Change,
            RouteNetlinkMessage::DelRoute(message),
            0,
            Operation::VipRouteDelete,
            Subject::Address(route.vip),
        );
        match answer {
            Ok(_) => Ok(true),
            Err(error) if error.errno() == Some(libc::ESRCH) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Removes every route of `table` carrying `protocol`, of both families, whatever its
    /// type and prefix; returns how many.
    pub fn flush_routes(&mut self, table: u32, protocol: u8) -> Result<usize, NetlinkError> {
        let mut removed = 0;
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut request = RouteMessage::default();
            request.header.address_family = family;
            let routes = self.request(
                Exchange::Dump,
                RouteNetlinkMessage::GetRoute(request),
                0,
                Operation::RouteDump,
                Subject::Table(table),
            )?;
            for reply in routes {
                let RouteNetlinkMessage::NewRoute(route) = reply else {
                    continue;
                };
                if table_of(&route) != table || route.header.protocol != protocol.into() {
                    continue;
                }
                let vip = route.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Destination(address) => ip_of(address),
                    _ => None,
                });
                let subject = vip.map_or(Subject::Table(table), Subject::Address);
                // Sent back as it came, the dumped route names itself exactly.
                let answer = self.request(
                    Exchange::Change,
                    RouteNetlinkMessage::DelRoute(route),
                    0,
                    Operation::VipRouteDelete,
                    subject,
                );
                match answer {
                    Ok(_) => removed += 1,
                    Err(error) if error.errno() == Some(libc::ESRCH) => {}
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(removed)
    }
}

/// A message naming `route`: family, host prefix, table, type, protocol.
fn vip_message(route: VipRoute) -> RouteMessage {
    let mut message = RouteMessage::default();
    set_destination(&mut message, route.vip);
    message.header.kind = RouteType::BlackHole;
    message.header.protocol = RouteProtocol::from(route.protocol);
    // As iproute2 does: ids above 255 go in RTA_TABLE only.
    message.header.table = u8::try_from(route.table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
    message.attributes.push(RouteAttribute::Table(route.table));
    message
}

/// Sets the family and a host-route destination for `address`.
fn set_destination(message: &mut RouteMessage, address: IpAddr) {
    let (family, length) = match address {
        IpAddr::V4(_) => (AddressFamily::Inet, 32),
        IpAddr::V6(_) => (AddressFamily::Inet6, 128),
    };
    message.header.address_family = family;
    message.header.destination_prefix_length = length;
    message
        .attributes
        .push(RouteAttribute::Destination(RouteAddress::from(address)));
}

/// A route's table: RTA_TABLE when present (ids above 255 live only there).
fn table_of(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(table) => Some(*table),
            _ => None,
        })
        .unwrap_or(u32::from(route.header.table))
}

fn ip_of(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// The name of interface `ifindex` in this namespace.
fn interface_name(ifindex: u32) -> Option<String> {
    let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `name` has the IF_NAMESIZE bytes if_indextoname writes at most.
    let found = unsafe { libc::if_indextoname(ifindex, name.as_mut_ptr()) };
    if found.is_null() {
        return None;
    }
    // SAFETY: on success if_indextoname wrote a NUL-terminated name into `name`.
    let name = unsafe { CStr::from_ptr(name.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}
