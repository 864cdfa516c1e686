//! Restarting the agent under a running topology, and flows that carry data all the while:
//! each TCP flow sends one byte at a time and must get exactly one answer line from the same
//! backend per byte; each UDP flow (a fixed source port) must get an answer from the same
//! backend for every datagram.

use std::ffi::OsStr;
use std::io::Read;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use sluice_tests::{PinDir, SluiceAgent, eventually, xdp_program};

use super::{Conn, Setup, ip};

/// How the running agent goes away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM, as an init system stops it.
    Term,
    /// SIGKILL, as a crash.
    Kill,
}

impl Setup {
    /// Stops the agent `how`, checks the program keeps forwarding with no agent (every flow
    /// of `flows` moves on), starts a new agent on the same pins (with `env` set) and waits
    /// until it runs and every flow moved on again.
    pub fn restart(&mut self, how: Stop, flows: &Flows, env: &[(&str, &OsStr)]) {
        self.restart_after(how, flows, env, |_| {});
    }

    /// [`Setup::restart`], running `between` on the pin directory while no agent runs.
    pub fn restart_after(
        &mut self,
        how: Stop,
        flows: &Flows,
        env: &[(&str, &OsStr)],
        between: impl FnOnce(&std::path::Path),
    ) {
        let pins = self.stop_agent(how);
        flows.wait_for_progress("with no agent running");
        between(pins.path());
        flows.wait_for_progress("with no agent running, after the pins changed");
        self.start_agent(pins, env);
        flows.wait_for_progress("after the restart");
    }

    /// Starts an agent on `pins` (with `env` set) in place of a stopped one, and waits until
    /// it runs.
    pub fn start_agent(&mut self, pins: Arc<PinDir>, env: &[(&str, &OsStr)]) {
        let config = self.config_text();
        let mut agent = SluiceAgent::start_in(&self.lb, &config, pins, &[], env);
        agent.wait_running(Duration::from_secs(30));
        self.agent = Some(agent);
    }
}

impl Setup {
    /// Stops the agent `how` and returns its pins, checking the program stays attached.
    pub fn stop_agent(&mut self, how: Stop) -> Arc<PinDir> {
        let agent = self
            .agent
            .take()
            .unwrap_or_else(|| panic!("agent not started"));
        let pins = agent.pins();
        let log = agent.log();
        let status = match how {
            Stop::Term => agent.stop(Duration::from_secs(10)),
            Stop::Kill => agent.kill(),
        };
        if how == Stop::Term {
            assert!(status.success(), "sluice exited with {status}; log:\n{log}");
        }
        assert!(
            xdp_program(&self.lb, "eth0").is_some(),
            "the program stays attached after {how:?}"
        );
        pins
    }
}

/// One flow's tally, shared with its thread.
#[derive(Default)]
struct Tally {
    exchanges: AtomicU64,
}

/// Long-lived flows, each driven by its own thread until [`Flows::finish`].
pub struct Flows {
    stop: Arc<AtomicBool>,
    tallies: Vec<Arc<Tally>>,
    threads: Vec<JoinHandle<Result<FlowReport, String>>>,
}

/// What a flow saw from start to end.
#[derive(Debug)]
pub struct FlowReport {
    pub flow: String,
    pub backend: String,
    pub exchanges: u64,
}

impl Flows {
    /// Opens `tcp` connections and `udp` sockets through the VIPs from the client namespace
    /// and starts carrying data on each.
    pub fn start(setup: &Setup, tcp: usize, udp: usize) -> Flows {
        setup.client.in_ns(|| setup.wait_for_first_tcp_flow());
        let conns: Vec<Conn> = setup
            .client
            .in_ns(|| (0..tcp).map(|_| setup.tcp_connect()).collect());
        let client = ip(setup.plan.client);
        let udp_vip = setup.udp_vip();
        let sockets: Vec<UdpSocket> = setup.client.in_ns(|| {
            (0..udp)
                .map(|_| {
                    let socket = UdpSocket::bind(SocketAddr::new(client, 0))
                        .unwrap_or_else(|e| panic!("bind: {e}"));
                    socket
                        .connect(udp_vip)
                        .unwrap_or_else(|e| panic!("connect: {e}"));
                    socket
                })
                .collect()
        });
        let stop = Arc::new(AtomicBool::new(false));
        let mut flows = Flows {
            stop: Arc::clone(&stop),
            tallies: Vec::new(),
            threads: Vec::new(),
        };
        for conn in conns {
            let tally = Arc::new(Tally::default());
            let (stop, t) = (Arc::clone(&stop), Arc::clone(&tally));
            flows
                .threads
                .push(std::thread::spawn(move || tcp_flow(conn, &stop, &t)));
            flows.tallies.push(tally);
        }
        for socket in sockets {
            let tally = Arc::new(Tally::default());
            let (stop, t) = (Arc::clone(&stop), Arc::clone(&tally));
            flows
                .threads
                .push(std::thread::spawn(move || udp_flow(socket, &stop, &t)));
            flows.tallies.push(tally);
        }
        flows
    }

    /// Waits until every flow completed at least two more exchanges.
    pub fn wait_for_progress(&self, when: &str) {
        let start: Vec<u64> = self
            .tallies
            .iter()
            .map(|t| t.exchanges.load(Ordering::Relaxed))
            .collect();
        eventually(Duration::from_secs(10), || {
            let stalled: Vec<usize> = self
                .tallies
                .iter()
                .zip(&start)
                .enumerate()
                .filter(|(_, (t, s))| t.exchanges.load(Ordering::Relaxed) < *s + 2)
                .map(|(i, _)| i)
                .collect();
            if stalled.is_empty() {
                Ok(())
            } else if self.threads.iter().any(JoinHandle::is_finished) {
                Err(format!("a flow ended {when}; flows {stalled:?} stalled"))
            } else {
                Err(format!("flows {stalled:?} made no progress {when}"))
            }
        });
    }

    /// Stops every flow and returns what each saw; `Err` names the first flow that broke.
    pub fn finish(self) -> Vec<Result<FlowReport, String>> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err("the flow's thread panicked".into()))
            })
            .collect()
    }
}

/// One byte, one answer line, always from the backend that answered the connection first;
/// at the end nothing more may be pending (a duplicated byte would have left an answer).
fn tcp_flow(mut conn: Conn, stop: &AtomicBool, tally: &Tally) -> Result<FlowReport, String> {
    let flow = format!("tcp {}", conn.local);
    let backend = conn.served_by.clone();
    while !stop.load(Ordering::Relaxed) {
        match conn.ask() {
            Ok(name) if name == backend => {
                tally.exchanges.fetch_add(1, Ordering::Relaxed);
            }
            Ok(name) => {
                return Err(format!("{flow} moved from {backend} to {name}"));
            }
            Err(e) => {
                return Err(format!(
                    "{flow} to {backend} broke after {} exchanges: {e}",
                    tally.exchanges.load(Ordering::Relaxed)
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Nothing unasked may follow: a byte delivered twice would have drawn a second answer.
    let buffered = conn.reader.buffer().len();
    let stream = conn.reader.get_mut();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let mut extra = [0u8; 64];
    match stream.read(&mut extra) {
        Ok(0) => return Err(format!("{flow} was closed by {backend}")),
        Ok(n) => return Err(format!("{flow}: {} unasked bytes", n + buffered)),
        Err(_) if buffered > 0 => return Err(format!("{flow}: {buffered} unasked bytes")),
        Err(_) => {}
    }
    Ok(FlowReport {
        flow,
        backend,
        exchanges: tally.exchanges.load(Ordering::Relaxed),
    })
}

/// One datagram, one answer, always from the same backend: a datagram without an answer
/// within two seconds is a lost one.
fn udp_flow(socket: UdpSocket, stop: &AtomicBool, tally: &Tally) -> Result<FlowReport, String> {
    let local = socket.local_addr().map_err(|e| e.to_string())?;
    let flow = format!("udp {local}");
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let mut backend: Option<String> = None;
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        socket
            .send(b"who")
            .map_err(|e| format!("{flow}: send: {e}"))?;
        let n = socket.recv(&mut buf).map_err(|e| {
            format!(
                "{flow}: no answer after {} exchanges: {e}",
                tally.exchanges.load(Ordering::Relaxed)
            )
        })?;
        let name = String::from_utf8_lossy(&buf[..n]).into_owned();
        match &backend {
            None => backend = Some(name),
            Some(first) if *first == name => {}
            Some(first) => return Err(format!("{flow} moved from {first} to {name}")),
        }
        tally.exchanges.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(FlowReport {
        flow,
        backend: backend.unwrap_or_default(),
        exchanges: tally.exchanges.load(Ordering::Relaxed),
    })
}

impl Setup {
    /// Takes the running data path down (`sluice detach`) and starts an agent on a fresh one
    /// with the current config (say, after setting `dataplane`: a table size only applies to
    /// new maps).
    pub fn start_afresh(&mut self) {
        let pins = self.stop_agent(Stop::Term);
        let pin_dir = pins.path().display().to_string();
        let (ok, out) = sluice_tests::sluice_cli(&self.lb, &["detach", "--pin-dir", &pin_dir]);
        assert!(ok, "sluice detach: {out}");
        self.start_agent(pins, &[]);
    }

    /// Packets the running data path counted under `reason`, from its pinned counters.
    pub fn xdp_count(&self, reason: lb_common::stats::Reason) -> u64 {
        use aya::maps::{Map, MapData, PerCpuArray};
        let agent = self
            .agent
            .as_ref()
            .unwrap_or_else(|| panic!("agent not started"));
        let path = agent
            .pins()
            .path()
            .join(format!("v{}", lb_common::schema::SCHEMA_VERSION))
            .join(lb_common::maps::GLOBAL_STATS);
        let data = MapData::from_pin(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let stats: PerCpuArray<MapData, lb_common::stats::Counter> =
            PerCpuArray::try_from(Map::PerCpuArray(data))
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let per_cpu = stats
            .get(&(reason as u32), 0)
            .unwrap_or_else(|e| panic!("GLOBAL_STATS[{reason:?}]: {e}"));
        per_cpu.iter().map(|c| c.packets).sum()
    }
}
