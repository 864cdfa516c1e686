//! The L7 contenders' configs, written so each does the same work: one worker, an access log,
//! HTTP/1.1 on [`H1_PORT`], HTTP/2 with prior knowledge on [`H2C_PORT`], TLS (the same
//! self-signed certificate) on [`TLS_PORT`], HTTP/1.1 with the access log off on
//! [`QUIET_PORT`], every request forwarded to one keep-alive pool
//! of the same backend with `X-Forwarded-For/-Proto/-Host` set, as Sluice does.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::bench::agent::ADMIN;
use crate::bench::write;
use crate::shell;

pub const HOST: &str = "127.0.0.1";
pub const H1_PORT: u16 = 8080;
pub const H2C_PORT: u16 = 8082;
pub const TLS_PORT: u16 = 8443;
/// Sluice only: the keep-alive route behind a filter chain.
pub const GATEWAY_PORT: u16 = 8084;
/// HTTP/1.1 again, with the access log off (every contender).
pub const QUIET_PORT: u16 = 8086;
/// Sluice only: a virtual host of [`ROUTES`] prefix routes.
pub const ROUTES_PORT: u16 = 8085;
/// The routes on [`ROUTES_PORT`].
pub const ROUTES: usize = 10_000;
/// Sluice's access lines go to a file beside its config, as nginx's do (its default text
/// line, the access log being on by default).
const ACCESS_LOG: &str = "[log]\naccess_log_file = \"sluice-access.log\"\n";
/// Sluice's one pool. Its circuit breakers admit the many-connections case's 10,000
/// requests in flight at once (by default 1,024 may be, and as many wait, and the rest are
/// answered 503); connections to the backend stay at their default cap of 1,024, the waiting
/// requests queue for them.
fn pool() -> String {
    format!(
        "[[pool]]
name = \"backend\"
health_check = {{ kind = \"none\" }}
backend = [{{ address = \"{HOST}\", port = {BACKEND_PORT} }}]
circuit_breakers = {{ max_requests = 20000, max_pending_requests = 20000 }}
"
    )
}
/// The gateway's key set, beside the config file.
pub const JWKS_FILE: &str = "jwks.json";
pub const BACKEND_PORT: u16 = 9001;
/// What the backend answers to every request.
pub const BODY: &str = "hello from the backend\n";
/// The certificate's name (it is self-signed; clients do not verify it).
const SERVER_NAME: &str = "bench.sluice.test";

/// The certificate and key every contender serves, and both in one file for HAProxy.
pub struct Certificate {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub combined: PathBuf,
}

/// Generates a self-signed RSA-2048 certificate into `dir` with `openssl`. RSA, not ECDSA:
/// verifying an ECDSA signature costs the client more than making it costs the server, so
/// with ECDSA the full-handshake case would measure the load generator; an RSA signature is
/// the server's expensive step, as it is for most sites that measure handshakes.
pub fn certificate(dir: &Path) -> Result<Certificate> {
    let paths = Certificate {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        combined: dir.join("cert-and-key.pem"),
    };
    shell::output(
        Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "7",
            ])
            .args(["-subj", &format!("/CN={SERVER_NAME}")])
            .args(["-addext", &format!("subjectAltName=DNS:{SERVER_NAME}")])
            .arg("-keyout")
            .arg(&paths.key)
            .arg("-out")
            .arg(&paths.cert),
    )
    .context("generating a self-signed certificate with openssl")?;
    let read =
        |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    write(
        &paths.combined,
        &format!("{}{}", read(&paths.cert)?, read(&paths.key)?),
    )?;
    Ok(paths)
}

/// Descriptors nginx's worker may open (the bench raises its own soft limit to the hard
/// limit, and nginx warns when this is above it).
const NGINX_OPEN_FILES: u32 = 20_000;
/// nginx's connections per worker, client and upstream alike: the many-connections case has
/// 10,000 clients, and as many upstream connections may open while their requests are in
/// flight.
const NGINX_CONNECTIONS: u32 = 19_000;

/// The backend: nginx, one worker, a fixed body, keep-alive connections that last.
pub fn backend(dir: &Path) -> String {
    format!(
        "worker_processes 1;
daemon off;
pid {dir}/backend.pid;
worker_rlimit_nofile {NGINX_OPEN_FILES};
events {{ worker_connections {NGINX_CONNECTIONS}; }}
http {{
  access_log off;
  server {{
    listen {HOST}:{BACKEND_PORT} backlog=4096;
    keepalive_requests 10000000;
    location / {{ return 200 \"{body}\"; }}
  }}
}}
",
        dir = dir.display(),
        body = BODY.escape_default(),
    )
}

/// The gateway service's filters: a JWT check, a rate limit per principal far above what the
/// bench reaches (so every request takes a bucket but none is refused), and request ids.
const GATEWAY_FILTERS: &str = "[[service.l7.filter]]
name = \"users\"
jwt = { jwks_file = \"jwks.json\", algorithms = [\"ES256\"] }
[[service.l7.filter]]
name = \"per-user\"
rate_limit = { rate = 1000000000, key = \"principal\" }
[[service.l7.filter]]
name = \"ids\"
request_id = {}
";

/// Sluice: one pool, three services (h1, h2c, TLS) with one catch-all route each, and the h1
/// service again with a filter chain (gateway).
pub fn sluice(cert: &Certificate) -> String {
    let service = |name: &str, port: u16, tls: &str| {
        let filters = match name {
            "gateway" => GATEWAY_FILTERS,
            "quiet" => "access_log = false\n",
            _ => "",
        };
        format!(
            "[[service]]
name = \"{name}\"
vip = \"{HOST}\"
port = {port}
protocol = \"tcp\"
[service.l7]
{tls}{filters}[service.l7.limits]
max_connections = 100000
[[service.l7.virtual_host]]
name = \"any\"
domains = [\"*\"]
[[service.l7.virtual_host.route]]
match = {{ path_prefix = \"/\" }}
forward = {{ pool = \"backend\" }}
"
        )
    };
    format!(
        "[admin]
listen = \"{ADMIN}\"

{ACCESS_LOG}
[[certificate]]
name = \"bench\"
cert = \"{cert}\"
key = \"{key}\"

{pool}
{h1}
{h2c}
{tls}
{gateway}
{quiet}",
        cert = cert.cert.display(),
        key = cert.key.display(),
        h1 = service("h1", H1_PORT, ""),
        h2c = service("h2c", H2C_PORT, ""),
        tls = service("tls", TLS_PORT, "tls = { certificates = [\"bench\"] }\n"),
        gateway = service("gateway", GATEWAY_PORT, ""),
        quiet = service("quiet", QUIET_PORT, ""),
        pool = pool(),
    )
}

/// A path only route `index` of [`sluice_many_routes`] matches (`/r1/` is no prefix of `/r10/x`).
pub fn route_path(index: usize) -> String {
    format!("/r{index}/x")
}

/// Sluice for the many-routes cases alone (so the other cases' memory figures are not those
/// of 10,000 routes): the h1 service again, with [`ROUTES`] prefix routes in one virtual
/// host, each to the same pool. A request matching the last costs a scan of them all unless
/// the routes are indexed.
pub fn sluice_many_routes() -> String {
    let mut out = format!(
        "[admin]
listen = \"{ADMIN}\"

{ACCESS_LOG}
{pool}
[[service]]
name = \"routes\"
vip = \"{HOST}\"
port = {ROUTES_PORT}
protocol = \"tcp\"
[service.l7]
[service.l7.limits]
max_connections = 100000
[[service.l7.virtual_host]]
name = \"many\"
domains = [\"*\"]
",
        pool = pool(),
    );
    for index in 0..ROUTES {
        let _ = write!(
            out,
            "[[service.l7.virtual_host.route]]\nmatch = {{ path_prefix = \"/r{index}/\" }}\n\
             forward = {{ pool = \"backend\" }}\n"
        );
    }
    out
}

/// nginx: one worker, upstream keep-alive, HTTP/2 on a plain port (prior knowledge) and ALPN.
pub fn nginx(dir: &Path, cert: &Certificate) -> String {
    format!(
        "worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
worker_rlimit_nofile {NGINX_OPEN_FILES};
events {{ worker_connections {NGINX_CONNECTIONS}; }}
http {{
  # No access line for requests to the quiet port.
  map $server_port $logged {{ {QUIET_PORT} 0; default 1; }}
  access_log {dir}/nginx-access.log combined if=$logged;
  upstream backend {{
    server {HOST}:{BACKEND_PORT};
    keepalive 128;
    keepalive_requests 10000000;
  }}
  server {{
    listen {HOST}:{H1_PORT} backlog=4096;
    listen {HOST}:{H2C_PORT} http2 backlog=4096;
    listen {HOST}:{TLS_PORT} ssl http2 backlog=4096;
    listen {HOST}:{QUIET_PORT} backlog=4096;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    keepalive_requests 10000000;
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
    }}
  }}
}}
",
        dir = dir.display(),
        cert = cert.cert.display(),
        key = cert.key.display(),
    )
}

/// HAProxy: one thread, connection reuse across clients (as nginx's and Sluice's pools do).
/// Room for the many-connections case's 10,000 clients: HAProxy reckons two descriptors per
/// connection and asks for ~21,000 where the usual hard limit is 20,000; with connections to
/// the backend reused it needs about one per client, so `no strict-limits` lets it start
/// with a warning.
pub fn haproxy(cert: &Certificate) -> String {
    format!(
        "global
  nbthread 1
  log stdout format raw local0
  maxconn 10500
  no strict-limits
  ssl-default-bind-options ssl-min-ver TLSv1.2

defaults
  mode http
  log global
  option httplog
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
  option forwardfor
  http-reuse always

frontend bench
  bind {HOST}:{H1_PORT}
  bind {HOST}:{H2C_PORT} proto h2
  bind {HOST}:{TLS_PORT} ssl crt {combined} alpn h2,http/1.1
  http-request set-header X-Forwarded-Proto https if {{ ssl_fc }}
  http-request set-header X-Forwarded-Proto http if !{{ ssl_fc }}
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  default_backend backend

frontend quiet
  no log
  bind {HOST}:{QUIET_PORT}
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  default_backend backend

backend backend
  server backend1 {HOST}:{BACKEND_PORT}
",
        combined = cert.combined.display(),
    )
}
