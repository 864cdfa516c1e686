//! A DNS server for discovery tests (hickory-server on UDP and TCP inside a namespace),
//! answering authoritatively from records the test sets and changes while it runs; it can
//! also be told to fail (SERVFAIL) and counts the questions it gets per name.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use crate::{Netns, NsTask};

#[derive(Default)]
struct Zone {
    /// Lower-case absolute name (`app.test.`) to its records.
    records: HashMap<String, Vec<Record>>,
    failing: bool,
    queries: HashMap<String, usize>,
}

/// One SRV record: priority, weight, port and target name.
#[derive(Clone, Copy, Debug)]
pub struct Srv<'a> {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: &'a str,
}

/// A running server; dropping it stops the server.
pub struct TestDns {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    _task: NsTask<()>,
}

impl TestDns {
    /// Starts a server on `addr` (UDP and TCP) inside `ns`; returns once it listens.
    pub fn start(ns: &Netns, addr: SocketAddr) -> TestDns {
        let zone = Arc::new(Mutex::new(Zone::default()));
        let handler = Handler(Arc::clone(&zone));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let task = ns.spawn_task(async move {
            let udp = tokio::net::UdpSocket::bind(addr)
                .await
                .unwrap_or_else(|e| panic!("binding the test DNS server to udp {addr}: {e}"));
            let tcp = tokio::net::TcpListener::bind(addr)
                .await
                .unwrap_or_else(|e| panic!("binding the test DNS server to tcp {addr}: {e}"));
            let mut server = Server::new(handler);
            server.register_socket(udp);
            server.register_listener(tcp, Duration::from_secs(5), 64);
            let _ = ready_tx.send(());
            std::future::pending::<()>().await;
            drop(server);
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("the test DNS server did not start: {e}"));
        TestDns {
            addr,
            zone,
            _task: task,
        }
    }

    /// Where the server listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces `name`'s records by A/AAAA records for `ips` with `ttl` seconds (an empty
    /// list leaves the name without records: NXDOMAIN).
    pub fn set_addresses(&self, name: &str, ips: &[IpAddr], ttl: u32) {
        let owner = absolute(name);
        let records = ips
            .iter()
            .map(|ip| {
                let data = match ip {
                    IpAddr::V4(v4) => RData::A(A(*v4)),
                    IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
                };
                Record::from_rdata(owner.clone(), ttl, data)
            })
            .collect();
        self.set(name, records);
    }

    /// Replaces `name`'s records by SRV records with `ttl` seconds.
    pub fn set_srv(&self, name: &str, records: &[Srv<'_>], ttl: u32) {
        let owner = absolute(name);
        let records = records
            .iter()
            .map(|s| {
                let data = RData::SRV(SRV::new(s.priority, s.weight, s.port, absolute(s.target)));
                Record::from_rdata(owner.clone(), ttl, data)
            })
            .collect();
        self.set(name, records);
    }

    fn set(&self, name: &str, records: Vec<Record>) {
        let key = key(name);
        let mut zone = lock(&self.zone);
        if records.is_empty() {
            zone.records.remove(&key);
        } else {
            zone.records.insert(key, records);
        }
    }

    /// While `failing`, every question is answered SERVFAIL.
    pub fn set_failing(&self, failing: bool) {
        lock(&self.zone).failing = failing;
    }

    /// How many questions (any type) asked about `name` so far.
    pub fn queries(&self, name: &str) -> usize {
        lock(&self.zone)
            .queries
            .get(&key(name))
            .copied()
            .unwrap_or(0)
    }
}

fn key(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with('.') {
        lower
    } else {
        format!("{lower}.")
    }
}

fn absolute(name: &str) -> Name {
    Name::from_ascii(key(name)).unwrap_or_else(|e| panic!("{name:?} is not a DNS name: {e}"))
}

fn lock(zone: &Mutex<Zone>) -> std::sync::MutexGuard<'_, Zone> {
    zone.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Handler(Arc<Mutex<Zone>>);

impl Handler {
    /// The response code and answers for a question about `name` of type `kind`.
    fn answer(&self, name: &str, kind: RecordType) -> (ResponseCode, Vec<Record>) {
        let mut zone = lock(&self.0);
        *zone.queries.entry(key(name)).or_default() += 1;
        if zone.failing {
            return (ResponseCode::ServFail, Vec::new());
        }
        match zone.records.get(&key(name)) {
            None => (ResponseCode::NXDomain, Vec::new()),
            Some(records) => (
                ResponseCode::NoError,
                records
                    .iter()
                    .filter(|r| r.record_type() == kind)
                    .cloned()
                    .collect(),
            ),
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let mut metadata = Metadata::response_from_request(&request.metadata);
        let records = match request.request_info() {
            Ok(info) => {
                let (code, records) =
                    self.answer(&info.query.name().to_string(), info.query.query_type());
                metadata.response_code = code;
                records
            }
            Err(_) => {
                metadata.response_code = ResponseCode::FormErr;
                Vec::new()
            }
        };
        metadata.authoritative = true;
        let response = builder.build(metadata, records.iter(), [], [], []);
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(_) => ResponseInfo::from(Header {
                metadata,
                counts: HeaderCounts::default(),
            }),
        }
    }
}
