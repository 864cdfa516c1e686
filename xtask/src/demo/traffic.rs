//! The client's traffic, from threads inside the client namespace: new TCP connections to
//! the l4 VIP (each one a new flow for the XDP program to place) and HTTPS requests on
//! kept-alive connections to the l7 VIP (each request placed by the agent). Every answer
//! names the backend that served it, and lands in a [`Tally`].

use std::collections::{BTreeMap, VecDeque};
use std::io::BufReader;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Result;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use sluice_tests::Netns;

use super::tls::SERVER_NAME;
use super::topology::{APP_VIP, WEB_VIP};
use sluice_tests::http_client;

/// Clients per service.
const WORKERS: usize = 2;
/// Each client sends at most one request per this interval (about 100 a second).
const PACE: Duration = Duration::from_millis(10);
/// Time allowed to connect or to answer.
const TIMEOUT: Duration = Duration::from_millis(500);

/// Who answered a request.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// The backend of this name.
    Served(String),
    /// Nobody: refused, timed out, or an error status.
    Failed,
}

/// Answers counted per backend, in total and over a recent window.
#[derive(Debug, Default)]
pub struct Tally(Mutex<Counts>);

#[derive(Debug, Default)]
struct Counts {
    recent: VecDeque<(Instant, Outcome)>,
    total: BTreeMap<Outcome, u64>,
}

/// What a [`Tally`] holds at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub recent: BTreeMap<Outcome, u64>,
    pub total: BTreeMap<Outcome, u64>,
    /// The window `recent` covers.
    pub window: Duration,
}

impl Tally {
    fn record(&self, outcome: Outcome) {
        let mut counts = self.lock();
        counts.recent.push_back((Instant::now(), outcome.clone()));
        *counts.total.entry(outcome).or_default() += 1;
    }

    /// Counts so far, `recent` over the last `window`.
    pub fn snapshot(&self, window: Duration) -> Snapshot {
        let mut counts = self.lock();
        let now = Instant::now();
        while counts
            .recent
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > window)
        {
            counts.recent.pop_front();
        }
        let mut recent = BTreeMap::new();
        for (_, outcome) in &counts.recent {
            *recent.entry(outcome.clone()).or_default() += 1;
        }
        Snapshot {
            recent,
            total: counts.total.clone(),
            window,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        // A worker that panicked mid-count leaves consistent counts behind.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The running clients; stopped when dropped.
pub struct Traffic {
    pub web: Arc<Tally>,
    pub app: Arc<Tally>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Traffic {
    /// Starts the clients inside `client`; HTTPS trusts what `tls` trusts.
    pub fn start(client: &Netns, tls: &Arc<ClientConfig>) -> Result<Traffic> {
        let mut traffic = Traffic {
            web: Arc::default(),
            app: Arc::default(),
            stop: Arc::default(),
            threads: Vec::new(),
        };
        for index in 0..WORKERS {
            let (tally, stop) = (Arc::clone(&traffic.web), Arc::clone(&traffic.stop));
            traffic.threads.push(
                client.spawn_thread(format!("client web {index}"), move || {
                    l4_client(&tally, &stop)
                })?,
            );
            let (tally, stop) = (Arc::clone(&traffic.app), Arc::clone(&traffic.stop));
            let tls = Arc::clone(tls);
            traffic.threads.push(
                client.spawn_thread(format!("client app {index}"), move || {
                    l7_client(&tally, &stop, &tls)
                })?,
            );
        }
        Ok(traffic)
    }

    /// Stops the clients and waits for them.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One request per new TCP connection to the l4 VIP.
fn l4_client(tally: &Tally, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let outcome = match http_client::request(SocketAddr::V4(WEB_VIP), "GET", "/", TIMEOUT) {
            Ok(response) => served(&response),
            Err(_) => Outcome::Failed,
        };
        tally.record(outcome);
        pace(started);
    }
}

type TlsConn = BufReader<StreamOwned<ClientConnection, TcpStream>>;

/// Requests on one HTTPS connection to the l7 VIP, reconnecting when it breaks.
fn l7_client(tally: &Tally, stop: &AtomicBool, tls: &Arc<ClientConfig>) {
    let mut conn: Option<TlsConn> = None;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        if conn.is_none() {
            conn = connect_tls(tls).ok();
        }
        let outcome = match conn.as_mut() {
            Some(c) => match http_client::exchange(c, "GET", SERVER_NAME, "/", false) {
                Ok(response) => {
                    if response.close {
                        conn = None;
                    }
                    served(&response)
                }
                Err(_) => {
                    conn = None;
                    Outcome::Failed
                }
            },
            None => Outcome::Failed,
        };
        tally.record(outcome);
        pace(started);
    }
}

fn connect_tls(tls: &Arc<ClientConfig>) -> std::io::Result<TlsConn> {
    let tcp = TcpStream::connect_timeout(&SocketAddr::V4(APP_VIP), TIMEOUT)?;
    tcp.set_read_timeout(Some(TIMEOUT))?;
    tcp.set_write_timeout(Some(TIMEOUT))?;
    let name = ServerName::try_from(SERVER_NAME).map_err(std::io::Error::other)?;
    let session =
        ClientConnection::new(Arc::clone(tls), name.to_owned()).map_err(std::io::Error::other)?;
    Ok(BufReader::new(StreamOwned::new(session, tcp)))
}

fn served(response: &http_client::Response) -> Outcome {
    if response.status == 200 {
        Outcome::Served(response.body.trim().to_string())
    } else {
        Outcome::Failed
    }
}

fn pace(started: Instant) {
    if let Some(rest) = PACE.checked_sub(started.elapsed()) {
        std::thread::sleep(rest);
    }
}
