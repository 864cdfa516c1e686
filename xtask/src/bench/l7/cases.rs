//! The L7 cases: what each one measures, with which load generator, and how its output is
//! read.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use sluice_tests::Netns;

use super::idle::MANY_CONNECTIONS;
use super::load::{self, Invocation, Load};
use super::{Options, configs};
use crate::bench::process::run_bounded;

/// Streams per HTTP/2 connection; the connection count is the concurrency divided by it.
const H2_STREAMS: u32 = 8;
/// `openssl s_time` loops run side by side: a quarter of the concurrency (each is a process).
const S_TIME_SHARE: u32 = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Case {
    KeepAlive,
    /// Keep-alive with every contender's access log off.
    KeepAliveQuiet,
    /// Keep-alive over [`MANY_CONNECTIONS`] connections at once (the same route and port as
    /// [`Case::KeepAlive`]); before its load, the proxy's memory with that many idle ones.
    ManyConnections,
    Close,
    H2c,
    Tls,
    TlsFull,
    /// Keep-alive through Sluice's jwt + rate_limit + request_id chain.
    Gateway,
    /// Keep-alive on a virtual host of [`configs::ROUTES`] prefix routes, matching the first.
    RoutesFirst,
    /// The same, matching the last: what the route index saves.
    RoutesLast,
}

impl Case {
    pub const ALL: [Case; 10] = [
        Case::KeepAlive,
        Case::KeepAliveQuiet,
        Case::ManyConnections,
        Case::Gateway,
        Case::RoutesFirst,
        Case::RoutesLast,
        Case::Close,
        Case::H2c,
        Case::Tls,
        Case::TlsFull,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Case::KeepAlive => "HTTP/1.1 keep-alive",
            Case::KeepAliveQuiet => "HTTP/1.1 keep-alive, access log off",
            Case::ManyConnections => "HTTP/1.1 keep-alive, 10,000 connections",
            Case::Close => "HTTP/1.1 new connection per request",
            Case::H2c => "HTTP/2 (h2c, prior knowledge)",
            Case::Tls => "HTTPS new connection per request (wrk, resumption offered)",
            Case::TlsFull => "HTTPS full handshake per request (openssl s_time -new)",
            Case::Gateway => "HTTP/1.1 keep-alive, jwt + rate_limit + request_id (Sluice only)",
            Case::RoutesFirst => {
                "HTTP/1.1 keep-alive, 10,000 prefix routes, the first matching (Sluice only)"
            }
            Case::RoutesLast => {
                "HTTP/1.1 keep-alive, 10,000 prefix routes, the last matching (Sluice only)"
            }
        }
    }

    pub fn port(self) -> u16 {
        match self {
            Case::KeepAlive | Case::ManyConnections | Case::Close => configs::H1_PORT,
            Case::KeepAliveQuiet => configs::QUIET_PORT,
            Case::H2c => configs::H2C_PORT,
            Case::Tls | Case::TlsFull => configs::TLS_PORT,
            Case::Gateway => configs::GATEWAY_PORT,
            Case::RoutesFirst | Case::RoutesLast => configs::ROUTES_PORT,
        }
    }

    /// Whether only Sluice runs it: the others have no such filters to compare.
    pub fn sluice_only(self) -> bool {
        matches!(self, Case::Gateway | Case::RoutesFirst | Case::RoutesLast)
    }

    /// The load generator's command line (for `s_time`, that of one of its loops).
    /// `bearer`: the token the gateway case presents.
    pub fn invocation(
        self,
        opts: &Options,
        duration: Duration,
        h2_log: &Path,
        bearer: &str,
    ) -> Invocation {
        let (host, c) = (configs::HOST, opts.connections);
        match self {
            Case::KeepAlive | Case::KeepAliveQuiet => load::wrk(
                c,
                duration,
                false,
                &format!("http://{host}:{}/", self.port()),
            ),
            Case::ManyConnections => load::wrk(
                MANY_CONNECTIONS,
                duration,
                false,
                &format!("http://{host}:{}/", self.port()),
            ),
            Case::Close => load::wrk(
                c,
                duration,
                true,
                &format!("http://{host}:{}/", self.port()),
            ),
            Case::H2c => load::h2load(
                (c / H2_STREAMS).max(1),
                H2_STREAMS,
                duration,
                h2_log,
                &format!("http://{host}:{}/", self.port()),
            ),
            Case::Tls => load::wrk(
                c,
                duration,
                true,
                &format!("https://{host}:{}/", self.port()),
            ),
            Case::TlsFull => load::s_time(&format!("{host}:{}", self.port()), duration),
            Case::Gateway => load::wrk(
                c,
                duration,
                false,
                &format!("http://{host}:{}/", self.port()),
            )
            .with_header(&format!("Authorization: Bearer {bearer}")),
            Case::RoutesFirst => load::wrk(
                c,
                duration,
                false,
                &format!("http://{host}:{}{}", self.port(), configs::route_path(0)),
            ),
            Case::RoutesLast => load::wrk(
                c,
                duration,
                false,
                &format!(
                    "http://{host}:{}{}",
                    self.port(),
                    configs::route_path(configs::ROUTES - 1)
                ),
            ),
        }
    }
}

/// Runs the case's load for `duration` and reads what it measured.
pub fn generate(
    ns: &Netns,
    dir: &Path,
    case: Case,
    opts: &Options,
    duration: Duration,
    bearer: &str,
) -> Result<Load> {
    let limit = duration + Duration::from_secs(30);
    let h2_log = dir.join("h2load.log");
    let invocation = case.invocation(opts, duration, &h2_log, bearer);
    if case == Case::TlsFull {
        let loops = (opts.connections / S_TIME_SHARE).max(1);
        let commands = (0..loops)
            .map(|_| invocation.command(ns, opts.load_cpu))
            .collect();
        let (connections, wall) = load::run_s_time_loops(commands, limit)?;
        return Ok(Load {
            requests: connections,
            rps: connections as f64 / wall.as_secs_f64(),
            ..Load::default()
        });
    }
    let output = run_bounded(&mut invocation.command(ns, opts.load_cpu), limit)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    match case {
        Case::H2c => {
            let log = std::fs::read_to_string(&h2_log)
                .with_context(|| format!("reading {}", h2_log.display()))?;
            load::parse_h2load(&stdout, &log)
        }
        _ => load::parse_wrk(&stdout),
    }
}
