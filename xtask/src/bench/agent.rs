//! `sluice run` (the release build) inside a namespace, and the few admin API calls the bench
//! makes: readiness, status, reload.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sluice_tests::Netns;

use crate::bench::interrupt;
use crate::bench::process::{Daemon, command};

/// Where every bench config puts the admin API (inside the agent's namespace).
pub const ADMIN: &str = "127.0.0.1:9100";

/// A running agent, stopped with SIGTERM (it detaches its program) on drop.
pub struct Agent {
    pub daemon: Daemon,
    admin: SocketAddr,
}

impl Agent {
    /// Starts `sluice --log-level warn run --config CONFIG` in `ns`, pinned to `cpu` when
    /// given, its log in `log`, and waits until the admin API says it is ready.
    pub fn start(
        sluice: &Path,
        ns: &Netns,
        cpu: Option<usize>,
        config: &Path,
        log: &Path,
    ) -> Result<Agent> {
        let mut cmd = command(ns, cpu, sluice);
        // Its own pin folder, removed at exit: the next part's agent starts fresh.
        cmd.args([
            "--log-level",
            "warn",
            "run",
            "--detach-on-exit",
            "--pin-dir",
        ])
        .arg(crate::pins::unique_pin_dir("bench"))
        .arg("--config")
        .arg(config);
        let daemon = Daemon::spawn("sluice", cmd, log)?;
        let admin: SocketAddr = ADMIN.parse().context("the admin address")?;
        let mut agent = Agent { daemon, admin };
        agent.wait_ready(ns, Duration::from_secs(30))?;
        Ok(agent)
    }

    fn wait_ready(&mut self, ns: &Netns, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.daemon.check_running()?;
            if let Ok((200, _)) = http(ns, self.admin, "GET", "/ready") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "sluice is not ready after {timeout:?}; the end of its log:\n{}",
                    self.daemon.log_tail()
                );
            }
            interrupt::sleep(Duration::from_millis(50))?;
        }
    }

    /// `GET /status`, parsed.
    pub fn status(&self, ns: &Netns) -> Result<serde_json::Value> {
        let (code, body) = http(ns, self.admin, "GET", "/status")?;
        if code != 200 {
            bail!("GET /status answered {code}: {body}");
        }
        serde_json::from_str(&body).with_context(|| format!("GET /status is not JSON: {body}"))
    }

    /// `POST /reload`, which answers once the agent has applied (or rejected) the file.
    /// Returns how long that took.
    pub fn reload(&self, ns: &Netns) -> Result<Duration> {
        let start = Instant::now();
        let (code, body) = http(ns, self.admin, "POST", "/reload")?;
        let took = start.elapsed();
        if code != 200 {
            bail!("POST /reload answered {code}: {}", body.trim());
        }
        Ok(took)
    }
}

/// A contender while it runs: Sluice (with its admin API) or another proxy. Dropping it stops
/// the process (Sluice detaches its program).
pub enum Running {
    Sluice(Agent),
    Other(Daemon),
}

impl Running {
    pub fn daemon(&mut self) -> &mut Daemon {
        match self {
            Running::Sluice(agent) => &mut agent.daemon,
            Running::Other(daemon) => daemon,
        }
    }
}

/// One HTTP/1.1 request with `Connection: close` from a thread inside `ns`; returns the
/// status code and body. The admin API answers reloads only when they are done, so the read
/// timeout is long.
pub fn http(ns: &Netns, addr: SocketAddr, method: &str, path: &str) -> Result<(u16, String)> {
    ns.in_ns(|| {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
            .with_context(|| format!("connecting to the admin API at {addr}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(600)))?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes())?;
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .with_context(|| format!("reading the answer to {method} {path}"))?;
        parse_response(&response).with_context(|| format!("{method} {path}"))
    })
}

fn parse_response(response: &str) -> Result<(u16, String)> {
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("the answer has no end of headers")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no status code in {:?}", head.lines().next()))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Ok((code, body))
}

/// The body of a chunked transfer encoding.
fn dechunk(mut rest: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, after) = rest
            .split_once("\r\n")
            .context("a chunk has no size line")?;
        let size = usize::from_str_radix(size.trim(), 16)
            .with_context(|| format!("bad chunk size {size:?}"))?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = after.get(..size).context("a chunk is cut short")?;
        out.push_str(chunk);
        rest = after
            .get(size + 2..)
            .context("a chunk lacks its line end")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_answers() {
        let plain = "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n";
        assert_eq!(parse_response(plain).ok(), Some((200, "ok\n".into())));
        let chunked = "HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).ok(), Some((400, "abcde".into())));
        assert!(parse_response("garbage").is_err());
    }
}
