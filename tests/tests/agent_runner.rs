//! Tests of the one agent runner the tests, the bench and the demo share
//! (`sluice_tests::AgentProcess`): it waits for the admin API, talks to it, stops the agent with
//! SIGTERM, and kills or stops it on drop as the caller chose, in the process group asked for.

use std::path::Path;
use std::time::Duration;

use sluice_tests::{
    AgentError, AgentOptions, AgentProcess, DaemonError, Netns, OnDrop, privileged, sluice_binary,
};

const READY: Duration = Duration::from_secs(30);
const ADMIN_IO: Duration = Duration::from_secs(5);

/// An agent with nothing to serve: the admin API alone, on its default address.
const IDLE_CONFIG: &str = "[admin]\nlisten = \"127.0.0.1:9100\"\n";

/// A temp folder holding `config` as `sluice.toml`.
fn folder_with(config: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("sluice-runner-")
        .tempdir()
        .unwrap_or_else(|e| panic!("creating a temp folder: {e}"));
    std::fs::write(dir.path().join("sluice.toml"), config)
        .unwrap_or_else(|e| panic!("writing the config: {e}"));
    dir
}

fn start(ns: &Netns, dir: &Path, options: AgentOptions) -> AgentProcess {
    AgentProcess::start(
        ns,
        &dir.join("sluice.toml"),
        &dir.join("sluice.log"),
        options,
    )
    .unwrap_or_else(|e| panic!("starting sluice: {e}"))
}

fn alive(pid: u32) -> bool {
    // A zombie still has /proc/PID; the runner reaps what it kills, so this is liveness.
    Path::new(&format!("/proc/{pid}")).exists()
}

fn process_group(pid: u32) -> u32 {
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    nix::unistd::getpgid(Some(pid))
        .unwrap_or_else(|e| panic!("getpgid({pid}): {e}"))
        .as_raw() as u32
}

#[test]
fn waits_for_ready_answers_the_admin_api_and_stops_on_sigterm() {
    if !privileged() {
        return;
    }
    let ns = Netns::new("runner");
    let dir = folder_with(IDLE_CONFIG);
    let mut agent = start(&ns, dir.path(), AgentOptions::new(sluice_binary()));
    agent
        .wait_ready(READY)
        .unwrap_or_else(|e| panic!("not ready: {e}"));

    let status = agent
        .admin("GET", "/status", ADMIN_IO)
        .unwrap_or_else(|e| panic!("GET /status: {e}"));
    let json: serde_json::Value =
        serde_json::from_str(&status.body).unwrap_or_else(|e| panic!("{e}: {}", status.body));
    assert!(json.get("config_version").is_some(), "{json}");
    let missing = agent.admin("GET", "/no-such-page", ADMIN_IO);
    assert!(
        matches!(missing, Err(AgentError::AdminStatus { status: 404, .. })),
        "{missing:?}"
    );
    // The default: the agent stays in the caller's process group (a Ctrl-C takes it too).
    assert_eq!(
        process_group(agent.pid()),
        process_group(std::process::id())
    );

    let pid = agent.pid();
    let exit = agent
        .stop(Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("stopping: {e}"));
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}");
    assert!(!alive(pid));
    assert!(agent.log().contains("shutting down"), "{}", agent.log());
}

#[test]
fn kills_on_drop_or_stops_when_asked_to() {
    if !privileged() {
        return;
    }
    let ns = Netns::new("runner");

    let killed = folder_with(IDLE_CONFIG);
    let mut agent = start(&ns, killed.path(), AgentOptions::new(sluice_binary()));
    agent
        .wait_ready(READY)
        .unwrap_or_else(|e| panic!("not ready: {e}"));
    let pid = agent.pid();
    drop(agent);
    assert!(!alive(pid), "pid {pid} outlived its runner");
    let log = std::fs::read_to_string(killed.path().join("sluice.log")).unwrap_or_default();
    assert!(
        !log.contains("shutting down"),
        "killed, not stopped:\n{log}"
    );

    let stopped = folder_with(IDLE_CONFIG);
    let options = AgentOptions::new(sluice_binary())
        .own_process_group()
        .on_drop(OnDrop::Stop(Duration::from_secs(15)));
    let mut agent = start(&ns, stopped.path(), options);
    agent
        .wait_ready(READY)
        .unwrap_or_else(|e| panic!("not ready: {e}"));
    let pid = agent.pid();
    assert_eq!(process_group(pid), pid, "leads a group of its own");
    drop(agent);
    assert!(!alive(pid), "pid {pid} outlived its runner");
    let log = std::fs::read_to_string(stopped.path().join("sluice.log")).unwrap_or_default();
    assert!(log.contains("shutting down"), "stopped on SIGTERM:\n{log}");
}

#[test]
fn an_agent_that_exits_fails_the_wait_with_its_log() {
    if !privileged() {
        return;
    }
    let ns = Netns::new("runner");
    let dir = folder_with("no_such_table = 1\n");
    let mut agent = start(&ns, dir.path(), AgentOptions::new(sluice_binary()));
    match agent.wait_ready(READY) {
        Err(AgentError::Process(DaemonError::Exited { status, tail, .. })) => {
            assert!(!status.success());
            assert!(tail.contains("no_such_table"), "{tail}");
        }
        other => panic!("expected the exit to fail the wait, got {other:?}"),
    }
}
