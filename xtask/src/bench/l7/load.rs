//! The load generators of the L7 rows (wrk, h2load, `openssl s_time`): their command lines and
//! what their output says, parsed with errors that quote the line they could not read.

use std::fmt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::bench::process;
use crate::bench::stats::percentile;

/// A load generator's command line, run inside a namespace on the load CPU.
#[derive(Clone, Debug)]
pub struct Invocation {
    pub program: &'static str,
    pub args: Vec<String>,
}

impl Invocation {
    /// The same command with a request header (wrk's `-H`), placed before the URL.
    pub fn with_header(mut self, header: &str) -> Self {
        let at = self.args.len().saturating_sub(1);
        self.args
            .splice(at..at, ["-H".to_owned(), header.to_owned()]);
        self
    }

    pub fn command(&self, ns: &sluice_tests::Netns, cpu: usize) -> Command {
        let mut cmd = ns.command_on_cpu(Some(cpu), self.program);
        cmd.args(&self.args).stdin(Stdio::null());
        cmd
    }
}

impl fmt::Display for Invocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.program)?;
        for arg in &self.args {
            if arg.contains(' ') {
                write!(f, " '{arg}'")?;
            } else {
                write!(f, " {arg}")?;
            }
        }
        Ok(())
    }
}

/// What one load run measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Load {
    /// Completed requests (s_time: completed connections, each with one request).
    pub requests: u64,
    pub rps: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Socket errors and failed requests.
    pub errors: u64,
    /// Responses that were not 2xx or 3xx.
    pub non_2xx: u64,
}

/// `wrk -t1 -cC -dD --latency [-H 'Connection: close'] URL`.
pub fn wrk(connections: u32, duration: Duration, close: bool, url: &str) -> Invocation {
    let mut args: Vec<String> = vec![
        "-t1".into(),
        format!("-c{connections}"),
        format!("-d{}s", duration.as_secs().max(1)),
        "--latency".into(),
        "--timeout".into(),
        "5s".into(),
    ];
    if close {
        args.extend(["-H".into(), "Connection: close".into()]);
    }
    args.push(url.into());
    Invocation {
        program: "wrk",
        args,
    }
}

/// Reads wrk's report: `Requests/sec:`, the latency distribution (with `--latency`), the
/// request count, socket errors and non-2xx/3xx responses.
pub fn parse_wrk(output: &str) -> Result<Load> {
    let mut load = Load::default();
    let mut rps = None;
    for line in output.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", value] => rps = Some(number(value, line)?),
            ["50%", value] => load.p50_ms = Some(wrk_time_ms(value, line)?),
            ["99%", value] => load.p99_ms = Some(wrk_time_ms(value, line)?),
            [count, "requests", "in", ..] => load.requests = number(count, line)? as u64,
            ["Non-2xx", "or", "3xx", "responses:", count] => {
                load.non_2xx = number(count, line)? as u64
            }
            ["Socket", "errors:", rest @ ..] => {
                // connect N, read N, write N, timeout N
                for pair in rest.chunks(2) {
                    if let [_, count] = pair {
                        load.errors += number(count.trim_end_matches(','), line)? as u64;
                    }
                }
            }
            _ => {}
        }
    }
    load.rps =
        rps.with_context(|| format!("no `Requests/sec:` line in wrk's output:\n{output}"))?;
    if load.p50_ms.is_none() || load.p99_ms.is_none() {
        bail!("no latency distribution in wrk's output (was --latency given?):\n{output}");
    }
    Ok(load)
}

/// A wrk duration (`620.00us`, `1.52ms`, `2.00s`, `1.00m`) in milliseconds.
fn wrk_time_ms(text: &str, line: &str) -> Result<f64> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("no unit in {text:?} (line {line:?})"))?;
    let (value, unit) = text.split_at(split);
    let value = number(value, line)?;
    Ok(match unit {
        "us" => value / 1000.0,
        "ms" => value,
        "s" => value * 1000.0,
        "m" => value * 60_000.0,
        "h" => value * 3_600_000.0,
        _ => bail!("unknown time unit {unit:?} in line {line:?}"),
    })
}

/// `h2load -t1 -cN -mS -D SECS --log-file=LOG URL` (h2c with prior knowledge for `http://`).
pub fn h2load(
    connections: u32,
    streams: u32,
    duration: Duration,
    log: &Path,
    url: &str,
) -> Invocation {
    Invocation {
        program: "h2load",
        args: vec![
            "-t1".into(),
            format!("-c{connections}"),
            format!("-m{streams}"),
            format!("-D{}", duration.as_secs().max(1)),
            format!("--log-file={}", log.display()),
            url.into(),
        ],
    }
}

/// Reads h2load's summary (`finished in ..., N req/s`, the request and status counts) and
/// takes p50 and p99 from its per-request log, whose third column is microseconds until the
/// end of the response.
pub fn parse_h2load(output: &str, log: &str) -> Result<Load> {
    let mut load = Load::default();
    let mut rps = None;
    for line in output.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("finished in ") {
            let value = rest
                .split(", ")
                .find_map(|part| part.strip_suffix(" req/s"))
                .with_context(|| format!("no req/s in {line:?}"))?;
            rps = Some(number(value, line)?);
        } else if let Some(rest) = line.strip_prefix("requests: ") {
            load.requests = count_before(rest, "succeeded", line)?;
            load.errors = count_before(rest, "failed", line)?;
        } else if let Some(rest) = line.strip_prefix("status codes: ") {
            load.non_2xx = count_before(rest, "4xx", line)? + count_before(rest, "5xx", line)?;
        }
    }
    load.rps =
        rps.with_context(|| format!("no `finished in` line in h2load's output:\n{output}"))?;
    let mut micros = Vec::new();
    for (i, line) in log.lines().enumerate() {
        let duration = line
            .split('\t')
            .nth(2)
            .with_context(|| format!("h2load log line {}: no third column: {line:?}", i + 1))?;
        let duration: u64 = duration.trim().parse().with_context(|| {
            format!(
                "h2load log line {}: {duration:?} is not microseconds",
                i + 1
            )
        })?;
        micros.push(u32::try_from(duration).unwrap_or(u32::MAX));
    }
    if micros.is_empty() {
        bail!("h2load's log has no request");
    }
    micros.sort_unstable();
    load.p50_ms = Some(f64::from(percentile(&micros, 50)) / 1000.0);
    load.p99_ms = Some(f64::from(percentile(&micros, 99)) / 1000.0);
    Ok(load)
}

/// The number before `word` in a comma-separated list such as `12 total, 10 succeeded`.
fn count_before(list: &str, word: &str, line: &str) -> Result<u64> {
    let part = list
        .split(", ")
        .find(|p| p.trim().ends_with(word))
        .with_context(|| format!("no `{word}` count in {line:?}"))?;
    let value = part.trim().trim_end_matches(word).trim();
    Ok(number(value, line)? as u64)
}

/// `openssl s_time -connect ADDR -new -time SECS -www /`: full handshakes, one request each,
/// one connection at a time.
pub fn s_time(addr: &str, duration: Duration) -> Invocation {
    let args = ["s_time", "-new", "-www", "/", "-connect", addr, "-time"];
    let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    args.push(duration.as_secs().max(1).to_string());
    Invocation {
        program: "openssl",
        args,
    }
}

/// The connection count of `s_time`'s `N connections in T real seconds, B bytes read per
/// connection` line, checked to have read a response on each connection.
pub fn parse_s_time(output: &str) -> Result<u64> {
    let line = output
        .lines()
        .find(|l| l.contains("connections in") && l.contains("real seconds"))
        .with_context(|| format!("no `connections in ... real seconds` line in:\n{output}"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let count = words
        .first()
        .with_context(|| format!("empty line {line:?}"))?;
    let bytes = words
        .iter()
        .position(|w| *w == "bytes")
        .and_then(|i| words.get(i.checked_sub(1)?))
        .with_context(|| format!("no byte count in {line:?}"))?;
    let count = number(count, line)? as u64;
    if count > 0 && number(bytes, line)? == 0.0 {
        bail!("openssl s_time read no response on its connections: {line:?}");
    }
    Ok(count)
}

/// Several `s_time` loops at once (one per connection of the concurrency), each for
/// `duration`; returns their total and the wall time until the last one finished.
pub fn run_s_time_loops(commands: Vec<Command>, limit: Duration) -> Result<(u64, Duration)> {
    let start = Instant::now();
    let handles: Vec<_> = commands
        .into_iter()
        .map(|mut cmd| {
            std::thread::spawn(move || -> Result<u64> {
                let out = process::run_bounded(&mut cmd, limit)?;
                parse_s_time(&String::from_utf8_lossy(&out.stdout))
            })
        })
        .collect();
    let mut total = 0;
    for handle in handles {
        let count = handle
            .join()
            .map_err(|_| anyhow::anyhow!("an s_time thread panicked"))??;
        total += count;
    }
    Ok((total, start.elapsed()))
}

/// Whether the server at `addr` resumes a TLS session: one `openssl s_client` connection saves
/// its session (after a request, so TLS 1.3 tickets have arrived), a second offers it.
pub fn resumes_sessions(
    ns: &sluice_tests::Netns,
    cpu: usize,
    addr: &str,
    dir: &Path,
) -> Result<bool> {
    let (request, session) = (dir.join("request.txt"), dir.join("session.pem"));
    std::fs::write(&request, "GET / HTTP/1.0\r\n\r\n")
        .with_context(|| format!("writing {}", request.display()))?;
    let _ = std::fs::remove_file(&session);
    let mut outputs = Vec::new();
    for flag in ["-sess_out", "-sess_in"] {
        let input = std::fs::File::open(&request)
            .with_context(|| format!("opening {}", request.display()))?;
        let mut cmd = ns.command_on_cpu(Some(cpu), "openssl");
        cmd.args(["s_client", "-ign_eof", "-connect", addr, flag])
            .arg(&session)
            .stdin(input);
        let out = process::run_bounded(&mut cmd, Duration::from_secs(10))?;
        outputs.push(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    parse_s_client_reuse(&outputs[1])
}

/// `Reused, TLSv1.3, ...` or `New, TLSv1.3, ...` in `openssl s_client`'s output.
fn parse_s_client_reuse(output: &str) -> Result<bool> {
    for line in output.lines() {
        if line.starts_with("Reused, ") {
            return Ok(true);
        }
        if line.starts_with("New, ") {
            return Ok(false);
        }
    }
    bail!("openssl s_client printed neither `New,` nor `Reused,`:\n{output}")
}

fn number(text: &str, line: &str) -> Result<f64> {
    text.trim()
        .parse()
        .with_context(|| format!("{text:?} is not a number (line {line:?})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 1s test @ http://127.0.0.1:9001/
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   782.81us    1.72ms  19.92ms   89.97%
    Req/Sec    28.58k     3.38k   33.85k    63.64%
  Latency Distribution
     50%  142.00us
     75%  572.00us
     90%    2.50ms
     99%    8.47ms
  31458 requests in 1.11s, 4.47MB read
  Socket errors: connect 0, read 12, write 1, timeout 2
  Non-2xx or 3xx responses: 5
Requests/sec:  28393.13
Transfer/sec:      4.03MB
";

    #[test]
    fn reads_wrk() {
        let load = parse_wrk(WRK).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(load.requests, 31458);
        assert!((load.rps - 28393.13).abs() < 1e-6);
        assert_eq!(load.p50_ms, Some(0.142));
        assert_eq!(load.p99_ms, Some(8.47));
        assert_eq!((load.errors, load.non_2xx), (15, 5));
        assert!(parse_wrk("Requests/sec: 1\n").is_err(), "no latency");
        assert!(parse_wrk("nothing").is_err());
        assert!(parse_wrk(&WRK.replace("142.00us", "142.00zz")).is_err());
    }

    #[test]
    fn reads_h2load() {
        let out = "finished in 1.01s, 2000.00 req/s, 132.94KB/s
requests: 2003 total, 2006 started, 2003 done, 2000 succeeded, 3 failed, 3 errored, 0 timeout
status codes: 2000 2xx, 0 3xx, 1 4xx, 2 5xx
";
        let log: String = (1..=100)
            .map(|i| format!("1795247753371851\t200\t{i}000\n"))
            .collect();
        let load = parse_h2load(out, &log).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!((load.requests, load.errors, load.non_2xx), (2000, 3, 3));
        assert!((load.rps - 2000.0).abs() < 1e-9);
        assert_eq!((load.p50_ms, load.p99_ms), (Some(50.0), Some(99.0)));
        assert!(parse_h2load(out, "").is_err(), "empty log");
        assert!(parse_h2load(out, "1\t200\n").is_err(), "short log line");
        assert!(parse_h2load("requests: 1 total\n", &log).is_err());
    }

    #[test]
    fn reads_s_time() {
        let out = "Collecting connection statistics for 1 seconds\n***\n\n263 connections in \
                   0.22s; 1195.45 connections/user sec, bytes read 37872\n263 connections in 2 \
                   real seconds, 144 bytes read per connection\n";
        assert_eq!(parse_s_time(out).ok(), Some(263));
        assert!(parse_s_time("no such line").is_err());
        let empty = "5 connections in 2 real seconds, 0 bytes read per connection\n";
        assert!(parse_s_time(empty).is_err());
    }

    #[test]
    fn reads_s_client_reuse() {
        let reused = "---\nReused, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384\n";
        assert_eq!(parse_s_client_reuse(reused).ok(), Some(true));
        assert_eq!(
            parse_s_client_reuse("New, TLSv1.3, Cipher is X\n").ok(),
            Some(false)
        );
        assert!(parse_s_client_reuse("CONNECTED").is_err());
    }
}
