//! The agent's rtnetlink client: managed neighbour entries, route lookups and the VIP routes
//! of the announce table, asked of the kernel directly rather than by running `ip`, so the
//! agent needs no iproute2 on the host.
//!
//! Built on the rust-netlink crates (`netlink-packet-route` for the messages, `netlink-sys`
//! for the socket) that `rtnetlink` itself wraps, used synchronously: the callers
//! (`Dataplane::apply`, `sluice detach`, the announcer) are synchronous and each request is
//! one short round trip to the kernel.

mod neighbour;
mod route;

use std::fmt;
use std::io;
use std::net::IpAddr;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use thiserror::Error;

pub use neighbour::NeighbourEntry;
pub use route::{NextHop, VipRoute};

/// What the agent asked of the kernel, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// RTM_GETROUTE for one destination.
    RouteLookup,
    /// RTM_GETNEIGH for one entry.
    NeighbourLookup,
    /// RTM_NEWNEIGH with NLM_F_REPLACE and the managed flag.
    NeighbourReplace,
    /// RTM_DELNEIGH.
    NeighbourDelete,
    /// RTM_NEWROUTE of a VIP's blackhole route.
    VipRouteAdd,
    /// RTM_DELROUTE of a VIP's route.
    VipRouteDelete,
    /// RTM_GETROUTE dump of a table.
    RouteDump,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::RouteLookup => "looking up the route to",
            Self::NeighbourLookup => "looking up the neighbour entry of",
            Self::NeighbourReplace => "adding a managed neighbour entry for",
            Self::NeighbourDelete => "removing the neighbour entry of",
            Self::VipRouteAdd => "adding the VIP route of",
            Self::VipRouteDelete => "removing the VIP route of",
            Self::RouteDump => "listing the routes of",
        })
    }
}

/// What an operation was about: an address, or a whole routing table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject {
    /// One address (a destination, a next hop, a VIP).
    Address(IpAddr),
    /// A routing table by id.
    Table(u32),
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Address(addr) => write!(f, "{addr}"),
            Self::Table(id) => write!(f, "table {id}"),
        }
    }
}

impl From<IpAddr> for Subject {
    fn from(addr: IpAddr) -> Self {
        Self::Address(addr)
    }
}

/// A failed netlink request. Each message is whole on one line (the operation, the address
/// and the kernel's errno text): callers log and publish `to_string()`.
#[derive(Debug, Error)]
pub enum NetlinkError {
    /// The socket could not be opened or bound.
    #[error("opening a netlink (NETLINK_ROUTE) socket: {0}")]
    Socket(io::Error),
    /// The kernel refused the request, or the socket failed while sending or receiving.
    #[error("{operation} {subject}: {error}")]
    Kernel {
        operation: Operation,
        subject: Subject,
        error: io::Error,
    },
    /// The kernel's answer could not be decoded, or was not the answer asked for.
    #[error("{operation} {subject}: unexpected answer from the kernel: {detail}")]
    Answer {
        operation: Operation,
        subject: Subject,
        detail: String,
    },
}

impl NetlinkError {
    /// The errno the kernel answered with, if it refused the request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel { error, .. } | Self::Socket(error) => error.raw_os_error(),
            Self::Answer { .. } => None,
        }
    }
}

/// A NETLINK_ROUTE socket in the calling thread's network namespace.
pub struct Netlink {
    socket: Socket,
    sequence: u32,
    buffer: Vec<u8>,
}

/// Room for one datagram of a dump: the kernel fills up to 32 KiB per recv.
const RECEIVE_BUFFER: usize = 64 * 1024;

impl Netlink {
    /// Opens a socket connected to the kernel.
    pub fn open() -> Result<Self, NetlinkError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Socket)?;
        socket.bind_auto().map_err(NetlinkError::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(NetlinkError::Socket)?;
        Ok(Self {
            socket,
            sequence: 0,
            buffer: Vec::with_capacity(RECEIVE_BUFFER),
        })
    }

    /// Sends `message` and returns what the kernel answered: nothing for a change (it is
    /// acknowledged), the entry for a lookup, every entry for a dump. `flags` are added to
    /// NLM_F_REQUEST (NLM_F_CREATE, NLM_F_REPLACE, ...).
    fn request(
        &mut self,
        exchange: Exchange,
        message: RouteNetlinkMessage,
        flags: u16,
        operation: Operation,
        subject: Subject,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        let kernel = |error| NetlinkError::Kernel {
            operation,
            subject,
            error,
        };
        let answer = |detail: String| NetlinkError::Answer {
            operation,
            subject,
            detail,
        };
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST
            | flags
            | match exchange {
                Exchange::Change => NLM_F_ACK,
                Exchange::Lookup => 0,
                Exchange::Dump => NLM_F_DUMP,
            };
        header.sequence_number = sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        self.socket.send(&bytes, 0).map_err(kernel)?;

        let mut replies = Vec::new();
        loop {
            self.buffer.clear();
            let size = self.socket.recv(&mut self.buffer, 0).map_err(kernel)?;
            if size > self.buffer.len() {
                return Err(answer(format!("a datagram of {size} bytes was truncated")));
            }
            let mut offset = 0;
            while offset < self.buffer.len() {
                let reply =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buffer[offset..])
                        .map_err(|e| answer(e.to_string()))?;
                let length = reply.header.length as usize;
                if length == 0 {
                    break;
                }
                offset += length;
                // Never ours, but skipped rather than trusted if it ever comes.
                if reply.header.sequence_number != sequence {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Error(error) => {
                        return match error.code {
                            None => Ok(replies),
                            Some(_) => Err(kernel(error.to_io())),
                        };
                    }
                    NetlinkPayload::Done(done) => {
                        return if done.code == 0 {
                            Ok(replies)
                        } else {
                            Err(kernel(io::Error::from_raw_os_error(done.code.abs())))
                        };
                    }
                    NetlinkPayload::InnerMessage(inner) => {
                        replies.push(inner);
                        // A lookup is answered by the entry alone.
                        if exchange == Exchange::Lookup {
                            return Ok(replies);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// The shape of a request's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exchange {
    /// A change, acknowledged (NLM_F_ACK) or refused.
    Change,
    /// A get of one entry: the entry, or an error.
    Lookup,
    /// A dump (NLM_F_DUMP): entries, then NLMSG_DONE.
    Dump,
}

#[cfg(test)]
mod tests;
