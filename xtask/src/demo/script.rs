//! The tour: steady traffic, a failover, a readmission, a reload, the metrics. Each step
//! changes one thing and watches the panel until the agent's status shows the effect.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::agent::{self, Status};
use super::display::panel;
use super::signals::StopFlag;
use super::topology::{self, ADMIN, APP_VIP, WEB_VIP};
use super::traffic::{Outcome, Traffic};
use super::{Interrupted, Lab, tls};

/// The backends the tour kills and brings back, one per service.
const VICTIMS: [&str; 2] = ["web-2", "app-2"];
/// The backends whose weight the reload raises, and to what.
const REWEIGHTED: [&str; 2] = ["web-1", "app-1"];
const NEW_WEIGHT: u16 = 3;
/// The panel's shares are over this much recent traffic.
const WINDOW: Duration = Duration::from_secs(2);
const REDRAW: Duration = Duration::from_millis(250);
/// Longest wait for something the health checks or a reload should do within seconds.
const EFFECT_TIMEOUT: Duration = Duration::from_secs(15);

pub fn tour(lab: &mut Lab, stop: &StopFlag, hold: bool) -> Result<()> {
    let started = Instant::now();
    let lb = lab.topology()?.lb.name().to_string();
    let ready = watch(lab, stop, Duration::from_secs(30), |s| {
        s.is_some_and(|s| s.config_version >= 1)
    })?;
    if ready.is_none() {
        bail!(
            "sluice did not come up within 30 s; the end of its log:\n{}",
            log(lab)
        );
    }
    if !topology::has_xdp(&lab.topology()?.lb, "eth0") {
        bail!(
            "sluice is up but no XDP program is on eth0 in {lb}; its log:\n{}",
            log(lab)
        );
    }
    lab.screen.say(&format!(
        "sluice is running: its XDP program is attached to eth0 in {lb}, its admin API listens \
         on {ADMIN} there.\nWhile the demo runs, look at it from another terminal:\n  \
         sudo ip netns exec {lb} curl -s http://{ADMIN}/metrics\n  \
         sudo ip netns exec {lb} {} status",
        lab.sluice.display()
    ));

    let client_tls = tls::client_config(&lab.dir.certificate())?;
    lab.traffic = Some(Traffic::start(&lab.topology()?.client, &client_tls)?);
    lab.screen.say(&format!(
        "Client traffic: new TCP connections to web ({WEB_VIP}, l4 DSR: the XDP program \
         forwards each new flow to a backend, which answers the client directly) and HTTPS \
         requests to app ({APP_VIP}, l7: the agent terminates TLS and picks a backend per \
         request). Each answer names its backend."
    ));
    watch(lab, stop, Duration::from_secs(10), |_| false)?;
    snapshot(lab);

    failover(lab, stop)?;
    readmission(lab, stop)?;
    reload(lab, stop)?;
    metrics(lab)?;

    if hold {
        lab.screen.say(
            "Holding (--hold): traffic keeps flowing and the admin API answers. Try \
             `sluice drain web web-1` through the commands above. Ctrl-C ends the demo.",
        );
        // Off a terminal, a panel every 10 s stands in for the live one.
        loop {
            match watch(lab, stop, Duration::from_secs(10), |_| false) {
                Ok(_) => {
                    if !lab.screen.is_live() {
                        snapshot(lab);
                    }
                }
                Err(err) if err.is::<Interrupted>() => {
                    snapshot(lab);
                    return Ok(());
                }
                Err(err) => return Err(err),
            }
        }
    }
    lab.screen.say(&format!(
        "Tour done in {:.0} s.",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Kills one backend of each service and waits for the health checks to take them out.
fn failover(lab: &mut Lab, stop: &StopFlag) -> Result<()> {
    lab.screen.say(&format!(
        "Killing {} and {}: their servers stop, so connections to them are refused.",
        VICTIMS[0], VICTIMS[1]
    ));
    let before = failures(lab);
    for backend in lab.backends.iter_mut() {
        if VICTIMS.contains(&backend.name()) {
            backend.kill();
        }
    }
    let took = watch(lab, stop, EFFECT_TIMEOUT, |s| {
        s.is_some_and(|s| {
            VICTIMS
                .iter()
                .all(|v| s.backend(v).is_some_and(|b| !b.healthy))
        })
    })?
    .with_context(|| {
        format!(
            "the agent did not mark {VICTIMS:?} down; its log:\n{}",
            log(lab)
        )
    })?;
    let (web, app) = failures(lab);
    lab.screen.say(&format!(
        "{} and {} are DOWN after {:.1} s (2 failed probes 500 ms apart): {} is out of web's \
         Maglev table in the kernel, {} out of app's pool. Meanwhile {} new web flows still \
         went to web-2 and were refused; app requests that met app-2 were retried on app-1, \
         {} failed.",
        VICTIMS[0],
        VICTIMS[1],
        took.as_secs_f64(),
        VICTIMS[0],
        VICTIMS[1],
        web - before.0,
        app - before.1,
    ));
    watch(lab, stop, Duration::from_secs(4), |_| false)?;
    snapshot(lab);
    Ok(())
}

/// Restarts the killed backends and waits for the health checks to readmit them.
fn readmission(lab: &mut Lab, stop: &StopFlag) -> Result<()> {
    lab.screen
        .say(&format!("Bringing {} and {} back.", VICTIMS[0], VICTIMS[1]));
    let topology = lab.topology.as_ref().context("the demo network is gone")?;
    for backend in lab.backends.iter_mut() {
        if VICTIMS.contains(&backend.name()) {
            let ns = topology
                .backend(backend.name())
                .with_context(|| format!("no namespace for {}", backend.name()))?;
            backend.revive(ns)?;
        }
    }
    let took = watch(lab, stop, EFFECT_TIMEOUT, |s| {
        s.is_some_and(|s| {
            VICTIMS
                .iter()
                .all(|v| s.backend(v).is_some_and(|b| b.healthy))
        })
    })?
    .with_context(|| {
        format!(
            "the agent did not readmit {VICTIMS:?}; its log:\n{}",
            log(lab)
        )
    })?;
    lab.screen.say(&format!(
        "Readmitted after {:.1} s (2 passed probes): new flows and requests spread over both \
         again.",
        took.as_secs_f64()
    ));
    watch(lab, stop, Duration::from_secs(5), |_| false)?;
    snapshot(lab);
    Ok(())
}

/// Raises two weights in the agent's config file and waits for the reload.
fn reload(lab: &mut Lab, stop: &StopFlag) -> Result<()> {
    let path = lab.dir.config();
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let new = reweighted(&text)?;
    lab.screen.say(&format!(
        "Reloading: the config file now gives {} and {} weight {NEW_WEIGHT} (was 1). The agent \
         watches the file and reloads when it is saved; `kill -HUP`, `sluice reload` and \
         POST /reload do the same.",
        REWEIGHTED[0], REWEIGHTED[1]
    ));
    // Replace the file in one step, so the agent never reads half of it.
    let staged = path.with_extension("toml.new");
    std::fs::write(&staged, new).with_context(|| format!("writing {}", staged.display()))?;
    std::fs::rename(&staged, &path).with_context(|| format!("replacing {}", path.display()))?;
    let applied = |s: Option<&Status>| {
        s.is_some_and(|s| {
            REWEIGHTED
                .iter()
                .all(|name| s.backend(name).is_some_and(|b| b.weight == NEW_WEIGHT))
        })
    };
    let took = match watch(lab, stop, Duration::from_secs(5), applied)? {
        Some(took) => took,
        None => {
            // No file watch (inotify limits, say): ask for the reload explicitly.
            let answer = agent::admin(&lab.topology()?.lb, "POST", "/reload")?;
            lab.screen
                .say(&format!("POST /reload: {}", answer.body.trim()));
            watch(lab, stop, EFFECT_TIMEOUT, applied)?.with_context(|| {
                format!("the reload did not apply; the agent's log:\n{}", log(lab))
            })?
        }
    };
    let version = lab
        .status
        .as_ref()
        .and_then(|s| s.latest())
        .map_or(0, |s| s.config_version);
    lab.screen.say(&format!(
        "Config version {version} applied {:.1} s after the save: new flows and requests now \
         split {NEW_WEIGHT}:1. Only the changed Maglev slots were written to the kernel.",
        took.as_secs_f64()
    ));
    watch(lab, stop, Duration::from_secs(8), |_| false)?;
    snapshot(lab);
    Ok(())
}

/// Shows a few lines of the Prometheus endpoint.
fn metrics(lab: &mut Lab) -> Result<()> {
    let topology = lab.topology()?;
    let body = agent::admin(&topology.lb, "GET", "/metrics")?.body;
    // A few families, zero samples left out.
    let shown: Vec<&str> = body
        .lines()
        .filter(|line| {
            [
                "sluice_l4_backend_new_flows_total",
                "sluice_l7_backend_responses_total",
                "sluice_backend_health_transitions_total",
                "sluice_config_reloads_total",
            ]
            .iter()
            .any(|name| line.starts_with(name))
                && !line.ends_with(" 0")
        })
        .collect();
    let lb = topology.lb.name().to_string();
    lab.screen.say(&format!(
        "Metrics: Prometheus scrapes http://{ADMIN}/metrics ([admin] listen; here inside {lb}). \
         {} samples now, among them:\n{}",
        body.lines().filter(|l| !l.starts_with('#')).count(),
        shown
            .iter()
            .map(|line| format!("  {line}"))
            .collect::<Vec<_>>()
            .join("\n")
    ));
    Ok(())
}

/// The shipped demo config with the [`REWEIGHTED`] backends at [`NEW_WEIGHT`].
pub fn reweighted(config: &str) -> Result<String> {
    let mut out = String::with_capacity(config.len());
    let mut changed = Vec::new();
    for line in config.split_inclusive('\n') {
        let name = REWEIGHTED
            .iter()
            .find(|name| line.contains(&format!("name = \"{name}\"")));
        match name {
            Some(name) if line.contains("weight = 1 }") => {
                out.push_str(&line.replace("weight = 1 }", &format!("weight = {NEW_WEIGHT} }}")));
                changed.push(*name);
            }
            _ => out.push_str(line),
        }
    }
    if changed.len() != REWEIGHTED.len() {
        bail!(
            "the demo's reload step looks for the backends {REWEIGHTED:?} written inline with \
             `weight = 1 }}` in config/demo.toml, and found {changed:?}: keep that form"
        );
    }
    Ok(out)
}

/// Runs the live panel for up to `limit`, until `done` holds for the agent's latest status.
/// Returns how long that took, or `None` when the time ran out. Fails when the user stops
/// the demo or the agent exits.
fn watch(
    lab: &mut Lab,
    stop: &StopFlag,
    limit: Duration,
    mut done: impl FnMut(Option<&Status>) -> bool,
) -> Result<Option<Duration>> {
    let started = Instant::now();
    let mut drawn: Option<Instant> = None;
    loop {
        if stop.is_set() {
            return Err(Interrupted.into());
        }
        if let Some(agent) = lab.agent.as_mut() {
            agent.check_running()?;
        }
        let status = lab.status.as_ref().and_then(|s| s.latest());
        if done(status.as_ref()) {
            return Ok(Some(started.elapsed()));
        }
        if started.elapsed() >= limit {
            return Ok(None);
        }
        if lab.screen.is_live() && drawn.is_none_or(|at| at.elapsed() >= REDRAW) {
            let lines = current_panel(lab, status.as_ref(), true);
            lab.screen.draw(&lines);
            drawn = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Leaves the panel as it is now in the output, so each step's result stays readable.
fn snapshot(lab: &mut Lab) {
    let status = lab.status.as_ref().and_then(|s| s.latest());
    let lines = current_panel(lab, status.as_ref(), lab.screen.is_live());
    lab.screen.snapshot(&lines);
}

fn current_panel(lab: &Lab, status: Option<&Status>, tty: bool) -> Vec<String> {
    match &lab.traffic {
        Some(traffic) => panel(
            &traffic.web.snapshot(WINDOW),
            &traffic.app.snapshot(WINDOW),
            status,
            tty,
        ),
        None => Vec::new(),
    }
}

/// Failed web connections and app requests so far.
fn failures(lab: &Lab) -> (u64, u64) {
    let failed = |tally: &super::traffic::Tally| {
        tally
            .snapshot(WINDOW)
            .total
            .get(&Outcome::Failed)
            .copied()
            .unwrap_or(0)
    };
    lab.traffic
        .as_ref()
        .map_or((0, 0), |t| (failed(&t.web), failed(&t.app)))
}

fn log(lab: &Lab) -> String {
    lab.agent.as_ref().map(|a| a.log_tail()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEMO: &str = include_str!("../../../config/demo.toml");

    #[test]
    fn the_reload_step_raises_exactly_the_two_weights() {
        let new = reweighted(DEMO).expect("demo.toml has the lines the reload edits");
        let changed: Vec<(&str, &str)> = DEMO
            .lines()
            .zip(new.lines())
            .filter(|(a, b)| a != b)
            .collect();
        assert_eq!(changed.len(), 2, "{changed:?}");
        for ((_, after), name) in changed.iter().zip(REWEIGHTED) {
            assert!(
                after.contains(name) && after.contains("weight = 3 }"),
                "{after}"
            );
        }
    }
}
