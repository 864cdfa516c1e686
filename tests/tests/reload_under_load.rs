//! Reloads under load. While a benchmark client that never retries keeps keep-alive
//! connections busy (wrk over HTTP/1.1, h2load over h2c), the test saves the config and
//! reloads it 100 times, alternately by `POST /reload` and SIGHUP; each reload adds or
//! removes a backend and a route. No request may fail, every reload must be applied, counted
//! and logged once, and no backend may see a connection cut short, nor reconnections at each
//! reload.

mod l7_support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use l7_support::admin::{Reloads, fetch};
use l7_support::{AGENT_TIMEOUT, Backend, Lab, Mode, local, pool, service};
use sluice_tests::{Captured, eventually, privileged, required_tool};

const RELOADS: u64 = 100;
/// Reloads start at most this often, so they spread over the load.
const PACE: Duration = Duration::from_millis(150);
/// How long the load runs: a warm-up, 100 paced reloads (15 s), and a margin.
const LOAD_SECONDS: u64 = 20;
const LISTEN: u16 = 8080;

/// Backends `a` and `b` stay in the pool; `c` and `d` come and go, one change per reload:
/// {a,b} -> {a,b,c} -> {a,b,c,d} -> {a,b,d} -> {a,b} -> ...
fn members(generation: u64, backends: &[Backend; 4]) -> Vec<&Backend> {
    let [a, b, c, d] = backends;
    match generation % 4 {
        0 => vec![a, b],
        1 => vec![a, b, c],
        2 => vec![a, b, c, d],
        _ => vec![a, b, d],
    }
}

/// The config of `generation`: `/generation` answers its number, `/extra` exists only in odd
/// generations, everything else goes to the pool.
fn config(generation: u64, backends: &[Backend; 4]) -> String {
    let extra = if generation % 2 == 1 {
        "[[service.l7.virtual_host.route]]\nmatch = { path_exact = \"/extra\" }\n\
         direct_response = { status = 200, body = \"extra\" }\n"
    } else {
        ""
    };
    format!(
        "{}{}[[service.l7.virtual_host]]\nname = \"all\"\ndomains = [\"*\"]\n\
         [[service.l7.virtual_host.route]]\nmatch = {{ path_exact = \"/generation\" }}\n\
         direct_response = {{ status = 200, body = \"gen-{generation}\" }}\n{extra}\
         [[service.l7.virtual_host.route]]\nmatch = {{ path_prefix = \"/\" }}\nforward = {{ pool = \"app\" }}\n",
        pool("app", &members(generation, backends), &[], ""),
        service("svc", local(LISTEN), "access_log = false"),
    )
}

/// Whether the agent serves `generation`'s routes.
fn serves(lab: &Lab, generation: u64) -> Result<(), String> {
    let get = |path: &str| fetch(&lab.ns, local(LISTEN), "GET", path);
    let answer = get("/generation")?;
    if answer.body != format!("gen-{generation}") {
        return Err(format!("/generation answers {answer:?}"));
    }
    let extra = get("/extra")?;
    let has_extra = extra.status == 200 && extra.body == "extra";
    if has_extra != (generation % 2 == 1) {
        return Err(format!("generation {generation}: /extra answers {extra:?}"));
    }
    Ok(())
}

/// The agent's log lines about reloads.
fn reload_log(lab: &Lab) -> String {
    lab.log()
        .lines()
        .filter(|l| l.contains("reload") || l.contains("config"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The client generating load: its command line, how many requests it keeps in flight, and
/// its verdict on its own output.
struct Load {
    name: &'static str,
    command: Command,
    in_flight: usize,
    check: fn(&str) -> Result<u64, String>,
}

/// Held by the test generating load: two load generators at once would only starve each
/// other (and the agent) of CPU.
static ONE_LOAD_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `load` against the agent while reloading it [`RELOADS`] times, then checks the load's
/// output, the reload accounting and the backends.
fn reload_under(lab: &Lab, backends: &[Backend; 4], load: Load) {
    let Load {
        name,
        command,
        in_flight,
        check,
    } = load;
    let mut client = Captured::spawn(&lab.ns, command);
    eventually(Duration::from_secs(10), || {
        if backends[0].count() > 0 && backends[1].count() > 0 {
            Ok(())
        } else {
            Err(format!("{name} traffic reaches no backend yet"))
        }
    });

    let connections = || -> Vec<usize> { backends.iter().map(Backend::connections).collect() };
    let before = connections();
    let started = Instant::now();
    for generation in 1..=RELOADS {
        let began = Instant::now();
        lab.save_config(&config(generation, backends));
        if generation % 2 == 0 {
            let answer = lab.admin("POST", "/reload");
            let body = answer.body.trim();
            assert!(
                answer.status == 200
                    && body.starts_with("config version ")
                    && body.ends_with(" applied"),
                "POST /reload of generation {generation}: {answer:?}; the agent's reloads:\n{}",
                reload_log(lab)
            );
        } else {
            lab.agent().reload();
        }
        eventually(AGENT_TIMEOUT, || serves(lab, generation));
        assert!(
            client.is_running(),
            "{name} ended before reload {generation} was applied: the reloads were too slow \
             ({:?} so far)",
            started.elapsed()
        );
        std::thread::sleep(PACE.saturating_sub(began.elapsed()));
    }
    let reloading = started.elapsed();
    // Read while the load still runs: when it stops, it abandons the requests it has in
    // flight, and the proxy has to close those backend connections in mid-request.
    let errors: Vec<Vec<String>> = backends.iter().map(Backend::connection_errors).collect();
    let opened: Vec<usize> = connections()
        .iter()
        .zip(&before)
        .map(|(now, before)| now - before)
        .collect();
    assert!(client.is_running(), "{name} ended before the reloads did");

    let output = client.finish(Duration::from_secs(LOAD_SECONDS + 30));
    let report = format!(
        "{name} ({}):\n{}{}",
        output.status, output.stdout, output.stderr
    );
    assert!(output.status.success(), "{report}");
    let requests = check(&output.stdout).unwrap_or_else(|e| panic!("{e}\n{report}"));

    // The file watch reloads a save too, when the trigger reaches the agent more than its
    // settle time (200 ms) after the save: rare, but a starved CPU gets there. Each reload
    // must still be counted, logged and versioned once.
    let log = lab.log();
    let by_watch = log.matches("the config file changed").count() as u64;
    let reloads = lab.reloads();
    let expected = Reloads {
        success: RELOADS + by_watch,
        failure: 0,
        version: RELOADS + by_watch + 1,
    };
    assert_eq!(
        reloads,
        expected,
        "each of the {RELOADS} reloads (and {by_watch} by the file watch) applied once; \
         the agent's reloads:\n{}",
        reload_log(lab)
    );
    let logged = log.matches("config reloaded").count() as u64;
    assert_eq!(logged, RELOADS + by_watch, "reloads logged");

    for (backend, errors) in backends.iter().zip(&errors) {
        assert!(
            errors.is_empty(),
            "backend {} saw connections end badly during the reloads: {errors:?}",
            backend.name
        );
        assert!(
            backend.count() > 0,
            "backend {} got no request while in the pool",
            backend.name
        );
    }
    eprintln!(
        "{name}: {requests} requests, {RELOADS} reloads in {reloading:?} ({by_watch} more by \
         the file watch); connections opened to backends a, b, c, d during the reloads: \
         {opened:?}"
    );
    // Backends a and b stay in a pool that changes at every reload: the proxy keeps its
    // connections to them, and opens new ones only when more requests are in flight to one
    // of them than it has connections for, never once per reload.
    for (backend, opened) in backends.iter().zip(&opened).take(2) {
        assert!(
            *opened <= in_flight,
            "{opened} new connections to backend {} during {RELOADS} reloads, with at most \
             {in_flight} requests in flight: the reloads dropped its pooled connections",
            backend.name
        );
    }
}

fn fleet(lab: &Lab) -> [Backend; 4] {
    ["a", "b", "c", "d"]
        .into_iter()
        .zip(9001..)
        .map(|(name, port)| Backend::start(&lab.ns, name, local(port), Mode::Echo))
        .collect::<Vec<_>>()
        .try_into()
        .unwrap_or_else(|_| unreachable!("four names, four backends"))
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}/work")
}

/// Counts responses by class in wrk itself and prints one line the test parses: wrk's own
/// summary counts 3xx as success and prints nothing when there are no errors.
const WRK_SCRIPT: &str = r#"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) ok = 0; bad = 0 end
function response(status, headers, body)
  if status >= 200 and status < 300 then ok = ok + 1 else bad = bad + 1 end
end
function done(summary, latency, requests)
  local ok_all, bad_all = 0, 0
  for _, t in ipairs(threads) do ok_all = ok_all + t:get("ok"); bad_all = bad_all + t:get("bad") end
  local e = summary.errors
  io.write(string.format(
    "wrk-summary requests=%d ok=%d non2xx=%d connect=%d read=%d write=%d timeout=%d\n",
    summary.requests, ok_all, bad_all, e.connect, e.read, e.write, e.timeout))
end
"#;

fn check_wrk(stdout: &str) -> Result<u64, String> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("wrk-summary "))
        .ok_or("wrk printed no summary line")?;
    let field = |key: &str| -> Result<u64, String> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("no {key} in {line:?}"))
    };
    let requests = field("requests")?;
    for errors in ["non2xx", "connect", "read", "write", "timeout"] {
        if field(errors)? != 0 {
            return Err(format!("wrk saw {errors} errors: {line}"));
        }
    }
    if requests == 0 || field("ok")? != requests {
        return Err(format!("not every request got a 2xx: {line}"));
    }
    Ok(requests)
}

#[test]
fn http1_keep_alive_load_sees_no_error_through_100_reloads() {
    if !privileged() || !required_tool("wrk", "wrk") {
        return;
    }
    let _one = ONE_LOAD_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut lab = Lab::new();
    let backends = fleet(&lab);
    lab.start(&config(0, &backends));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let script = dir.path().join("count.lua");
    std::fs::write(&script, WRK_SCRIPT).unwrap_or_else(|e| panic!("writing the script: {e}"));
    let mut command = lab.ns.command("wrk");
    command
        .args(["-c", "16", "-t", "1", "--timeout", "5s"])
        .arg(format!("-d{LOAD_SECONDS}s"))
        .arg("-s")
        .arg(&script)
        .arg(url(local(LISTEN)));
    let load = Load {
        name: "wrk",
        command,
        in_flight: 16,
        check: check_wrk,
    };
    reload_under(&lab, &backends, load);
    lab.stop();
}

/// Reads h2load's `requests:` and `status codes:` lines.
fn check_h2load(stdout: &str) -> Result<u64, String> {
    let counts = |prefix: &str| -> Result<HashMap<String, u64>, String> {
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .ok_or_else(|| format!("h2load printed no {prefix:?} line"))?;
        line.split(',')
            .map(|part| {
                let mut words = part.split_whitespace();
                let n = words.next().and_then(|n| n.parse().ok());
                match (n, words.next()) {
                    (Some(n), Some(what)) => Ok((what.to_string(), n)),
                    _ => Err(format!("cannot read {part:?} in {line:?}")),
                }
            })
            .collect()
    };
    let requests = counts("requests:")?;
    let statuses = counts("status codes:")?;
    let get = |map: &HashMap<String, u64>, key: &str| map.get(key).copied().unwrap_or(u64::MAX);
    let done = get(&requests, "done");
    for bad in ["failed", "errored", "timeout"] {
        if get(&requests, bad) != 0 {
            return Err(format!("h2load counted {bad} requests: {requests:?}"));
        }
    }
    // h2load counts a status when the response head arrives and a request as done when its
    // stream ends, so requests whose head came before the duration ran out count in "2xx"
    // but not in "done": 2xx lies between done and started, and no other status may appear.
    let ok = get(&statuses, "2xx");
    let other: u64 = ["3xx", "4xx", "5xx"]
        .iter()
        .map(|class| get(&statuses, class))
        .fold(0, u64::saturating_add);
    if done == 0
        || get(&requests, "succeeded") != done
        || ok < done
        || ok > get(&requests, "started")
        || other != 0
    {
        return Err(format!(
            "not every request done got a 2xx: {requests:?} {statuses:?}"
        ));
    }
    Ok(done)
}

#[test]
fn http2_load_sees_no_error_through_100_reloads() {
    if !privileged() || !required_tool("h2load", "nghttp2-client") {
        return;
    }
    let _one = ONE_LOAD_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut lab = Lab::new();
    let backends = fleet(&lab);
    lab.start(&config(0, &backends));
    // An http:// URL is h2c with prior knowledge to h2load.
    let mut command = lab.ns.command("h2load");
    command
        .args(["-c", "16", "-m", "4", "-t", "1"])
        .arg(format!("--duration={LOAD_SECONDS}"))
        .arg(url(local(LISTEN)));
    let load = Load {
        name: "h2load",
        command,
        in_flight: 16 * 4,
        check: check_h2load,
    };
    reload_under(&lab, &backends, load);
    lab.stop();
}
