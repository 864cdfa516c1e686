//! Neighbour entries: the managed ones the agent keeps for next hops (RTM_NEWNEIGH with
//! NTF_EXT_MANAGED, as `ip neigh replace ADDR dev DEV managed` sends), their removal, and
//! the lookup `sluice explain` shows.

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourExtFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{Exchange, Netlink, NetlinkError, Operation, Subject};

/// A neighbour entry as the kernel holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeighbourEntry {
    /// The neighbour's IP address.
    pub address: IpAddr,
    /// The interface it is on.
    pub ifindex: u32,
    /// Its link-layer address, once resolved.
    pub link_address: Option<Vec<u8>>,
    /// NUD state (`Reachable`, `Stale`, `Incomplete`, ...).
    pub state: NeighbourState,
    /// Whether it carries the managed flag: the kernel resolves it and keeps it resolved.
    pub managed: bool,
}

impl NeighbourEntry {
    /// The link-layer address as `aa:bb:cc:dd:ee:ff`, once resolved.
    pub fn link_address_text(&self) -> Option<String> {
        let bytes = self.link_address.as_ref()?;
        let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Some(hex.join(":"))
    }
}

impl Netlink {
    /// Creates, or turns into a managed one, the entry of `address` on `ifindex`: the kernel
    /// then resolves it and keeps it resolved without traffic (Linux >= 5.16).
    pub fn replace_managed_neighbour(
        &mut self,
        address: IpAddr,
        ifindex: u32,
    ) -> Result<(), NetlinkError> {
        let mut message = neighbour_message(address, ifindex);
        // No state: a managed entry starts unresolved and the kernel probes it.
        message.header.state = NeighbourState::None;
        message
            .attributes
            .push(NeighbourAttribute::ExtFlags(NeighbourExtFlags::Managed));
        self.request(
            Exchange::Change,
            RouteNetlinkMessage::NewNeighbour(message),
            NLM_F_CREATE | NLM_F_REPLACE,
            Operation::NeighbourReplace,
            Subject::Address(address),
        )?;
        Ok(())
    }

    /// Removes the entry of `address` on `ifindex`.
    pub fn delete_neighbour(&mut self, address: IpAddr, ifindex: u32) -> Result<(), NetlinkError> {
        self.request(
            Exchange::Change,
            RouteNetlinkMessage::DelNeighbour(neighbour_message(address, ifindex)),
            0,
            Operation::NeighbourDelete,
            Subject::Address(address),
        )?;
        Ok(())
    }

    /// The entry of `address` on `ifindex`; `None` when there is none.
    pub fn neighbour(
        &mut self,
        address: IpAddr,
        ifindex: u32,
    ) -> Result<Option<NeighbourEntry>, NetlinkError> {
        let answer = self.request(
            Exchange::Lookup,
            RouteNetlinkMessage::GetNeighbour(neighbour_message(address, ifindex)),
            0,
            Operation::NeighbourLookup,
            Subject::Address(address),
        );
        let replies = match answer {
            Ok(replies) => replies,
            Err(error) if error.errno() == Some(libc::ENOENT) => return Ok(None),
            Err(error) => return Err(error),
        };
        let entry = replies.into_iter().find_map(|reply| match reply {
            RouteNetlinkMessage::NewNeighbour(message) => Some(message),
            _ => None,
        });
        let Some(message) = entry else {
            return Err(NetlinkError::Answer {
                operation: Operation::NeighbourLookup,
                subject: Subject::Address(address),
                detail: "no neighbour entry in the answer".into(),
            });
        };
        let mut found = NeighbourEntry {
            address,
            ifindex: message.header.ifindex,
            link_address: None,
            state: message.header.state,
            managed: false,
        };
        for attribute in message.attributes {
            match attribute {
                NeighbourAttribute::LinkLayerAddress(bytes) => found.link_address = Some(bytes),
                NeighbourAttribute::ExtFlags(flags) => {
                    found.managed = flags.contains(NeighbourExtFlags::Managed);
                }
                _ => {}
            }
        }
        Ok(Some(found))
    }
}

/// The header and destination that name one entry.
fn neighbour_message(address: IpAddr, ifindex: u32) -> NeighbourMessage {
    let mut message = NeighbourMessage::default();
    message.header.ifindex = ifindex;
    let destination = match address {
        IpAddr::V4(v4) => {
            message.header.family = AddressFamily::Inet;
            NeighbourAddress::Inet(v4)
        }
        IpAddr::V6(v6) => {
            message.header.family = AddressFamily::Inet6;
            NeighbourAddress::Inet6(v6)
        }
    };
    message
        .attributes
        .push(NeighbourAttribute::Destination(destination));
    message
}
