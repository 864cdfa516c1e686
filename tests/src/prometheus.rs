//! A real Prometheus server (Debian's `prometheus`) in a namespace, scraping one target
//! every second, and instant queries through its HTTP API.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use crate::{ChildGuard, Netns, http_client};

/// A Prometheus server with its config and data in a temp folder. Dropping it kills the
/// server, then removes the folder.
pub struct PrometheusServer<'a> {
    ns: &'a Netns,
    listen: SocketAddr,
    // Declared before `dir`, so dropped first: the server dies before its folder goes.
    _child: ChildGuard,
    dir: tempfile::TempDir,
}

impl<'a> PrometheusServer<'a> {
    /// Starts Prometheus in `ns`, listening on `listen` and scraping `target` (host:port,
    /// path `/metrics`) every second as job `sluice`.
    pub fn start(ns: &'a Netns, listen: SocketAddr, target: SocketAddr) -> PrometheusServer<'a> {
        let dir = tempfile::Builder::new()
            .prefix("sluice-prometheus-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir: {e}"));
        let config = dir.path().join("prometheus.yml");
        let yaml = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: sluice\n    static_configs:\n      - targets: [\"{target}\"]\n"
        );
        std::fs::write(&config, yaml).unwrap_or_else(|e| panic!("writing {config:?}: {e}"));
        let log = std::fs::File::create(dir.path().join("prometheus.log"))
            .unwrap_or_else(|e| panic!("creating the log: {e}"));
        let log_err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("duplicating the log handle: {e}"));
        let mut command = ns.command("prometheus");
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let child = ns.spawn(command);
        PrometheusServer {
            ns,
            listen,
            _child: child,
            dir,
        }
    }

    /// Runs an instant query and returns `data.result` (an array of samples), or why not.
    pub fn query(&self, query: &str) -> Result<serde_json::Value, String> {
        let path = format!("/api/v1/query?query={}", percent_encode(query));
        let body = self.get(&path)?;
        let json: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("{query}: not JSON ({e}): {body}"))?;
        if json["status"] != "success" {
            return Err(format!("{query}: {body}"));
        }
        Ok(json["data"]["result"].clone())
    }

    /// Everything Prometheus logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    fn get(&self, path: &str) -> Result<String, String> {
        let addr = self.listen;
        self.ns
            .in_ns(|| {
                http_client::request_with(
                    addr,
                    "GET",
                    path,
                    Duration::from_secs(5),
                    Duration::from_secs(30),
                )
            })
            .map(|response| response.body)
            .map_err(|e| format!("GET {path} from {addr}: {e}"))
    }
}

/// Percent-encodes everything but unreserved characters, for a URL query.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
