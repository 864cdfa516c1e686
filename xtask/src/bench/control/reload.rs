//! How long the agent takes to apply a reload of 10,000 backends: `sluice run` with one DSR
//! service whose pool grows from 10 backends to 10,000, loses one, and shrinks back to 10,
//! each step through `POST /reload`, which answers once the change is in the kernel maps.
//!
//! The backends are addresses on the load balancer's directly connected /16; nothing answers
//! there, and no traffic is sent. The config path is a symlink to a file in another folder,
//! so rewriting the file does not also wake the agent's config watch (which would reload the
//! same change a second time, 200 ms later).

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use sluice_tests::{Netns, add_addr, ipv4_forwarding, veth};

use crate::bench::agent::{ADMIN, Agent};
use crate::bench::{interrupt, write};
use crate::shell::step;

const LB_ADDR: &str = "10.50.0.1/16";
const VIP: &str = "10.99.0.1";
pub const LARGE: usize = 10_000;
const SMALL: usize = 10;
/// A round slower than this is not repeated: the figure is clear, and the bench should end.
const SLOW: Duration = Duration::from_secs(20);

/// One reload: the pool's size before and after, and the time `POST /reload` took.
#[derive(Serialize)]
pub struct ReloadStep {
    pub from_backends: usize,
    pub to_backends: usize,
    pub ms: Vec<f64>,
}

#[derive(Serialize)]
pub struct ReloadReport {
    pub steps: Vec<ReloadStep>,
    /// Log lines of the agent's failures to add a managed neighbour entry, over the run.
    pub neighbour_failures: usize,
    /// Warning lines the agent logged, over the run.
    pub warnings: usize,
}

pub fn measure(sluice: &Path, rounds: u32) -> Result<ReloadReport> {
    let dir = tempfile::Builder::new()
        .prefix("sluice-bench-reload-")
        .tempdir()
        .context("creating a temp folder")?;
    let real = dir.path().join("real");
    let link = dir.path().join("link");
    for d in [&real, &link] {
        std::fs::create_dir(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let file = real.join("sluice.toml");
    let config = link.join("sluice.toml");
    std::os::unix::fs::symlink(&file, &config).context("linking the config file")?;
    write(&file, &config_text(SMALL))?;

    let lb = Netns::new("reload");
    let peer = Netns::new("peer");
    veth(&lb, "eth0", &peer, "eth0");
    add_addr(&lb, "eth0", LB_ADDR);
    ipv4_forwarding(&lb, "eth0");
    let log = dir.path().join("sluice.log");
    let agent = Agent::start(sluice, &lb, None, &config, &log)?;

    let plan = [(SMALL, LARGE), (LARGE, LARGE - 1), (LARGE - 1, SMALL)];
    let mut steps: Vec<ReloadStep> = plan
        .iter()
        .map(|&(from_backends, to_backends)| ReloadStep {
            from_backends,
            to_backends,
            ms: Vec::new(),
        })
        .collect();
    for round in 0..rounds {
        let started = Instant::now();
        for step_report in &mut steps {
            interrupt::check()?;
            write(&file, &config_text(step_report.to_backends))?;
            let took = agent.reload().with_context(|| {
                format!(
                    "reloading {} -> {} backends",
                    step_report.from_backends, step_report.to_backends
                )
            })?;
            check_applied(&agent, step_report.to_backends)?;
            step(
                "Measured",
                &format!(
                    "round {round}: reload {} -> {} backends applied in {:.0} ms",
                    step_report.from_backends,
                    step_report.to_backends,
                    took.as_secs_f64() * 1000.0
                ),
            );
            step_report.ms.push(took.as_secs_f64() * 1000.0);
        }
        if started.elapsed() > SLOW && round + 1 < rounds {
            step(
                "Skipping",
                &format!("further reload rounds: one took over {} s", SLOW.as_secs()),
            );
            break;
        }
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    drop(agent);
    Ok(ReloadReport {
        steps,
        neighbour_failures: text.matches("managed neighbour entry").count(),
        warnings: text.lines().filter(|l| l.contains("WARN")).count(),
    })
}

/// The status lists the pool with `backends` backends.
fn check_applied(agent: &Agent, backends: usize) -> Result<()> {
    let status = agent.status()?;
    let listed = status["pools"]
        .as_array()
        .and_then(|pools| pools.iter().find(|p| p["name"] == "pool"))
        .and_then(|p| p["backends"].as_array())
        .map_or(0, Vec::len);
    if listed != backends {
        bail!("after the reload the status lists {listed} backends, not {backends}");
    }
    Ok(())
}

/// One DSR service on port 80 of the VIP with `backends` backends 10.50.x.y:80.
fn config_text(backends: usize) -> String {
    let list: Vec<String> = (0..backends)
        .map(|i| format!("  {{ address = \"{}\", port = 80 }},\n", backend(i)))
        .collect();
    format!(
        "[admin]
listen = \"{ADMIN}\"

[[interface]]
name = \"eth0\"
xdp_mode = \"native\"

[[pool]]
name = \"pool\"
health_check = {{ kind = \"none\" }}
backend = [
{list}]

[[service]]
name = \"service\"
vip = \"{VIP}\"
port = 80
protocol = \"tcp\"
l4 = {{ mode = \"dsr\", pool = \"pool\" }}
",
        list = list.concat()
    )
}

/// Backend `i`: 10.50.1.1 onwards, skipping the network and broadcast-looking last octets.
fn backend(i: usize) -> Ipv4Addr {
    let n = u32::try_from(i).unwrap_or(u32::MAX);
    Ipv4Addr::new(10, 50, (1 + n / 250) as u8, (1 + n % 250) as u8)
}
