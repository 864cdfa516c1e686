//! A headless Chromium inside a namespace, driven through chromedriver (WebDriver) with
//! fantoccini, for tests of the admin API's status page.
//!
//! chromedriver and the browser it starts run in the namespace, so the page sees the
//! namespace's loopback. The WebDriver client's sockets must be made there too: every call
//! runs the client's runtime on a thread that entered the namespace.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

use crate::{ChildGuard, Netns, eventually, required_tool};

/// Where chromedriver listens, on the namespace's own loopback.
const DRIVER_PORT: u16 = 9515;

/// A browser session. Dropping it ends the session, then kills chromedriver (which takes
/// the browser with it).
pub struct Browser<'a> {
    ns: &'a Netns,
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    // Killed after the session ended; the profile folder goes last.
    _driver: ChildGuard,
    _profile: tempfile::TempDir,
}

/// Whether chromium and chromedriver are installed (see [`required_tool`]).
#[track_caller]
pub fn browser_available() -> bool {
    required_tool("chromium", "chromium") && required_tool("chromedriver", "chromium-driver")
}

impl<'a> Browser<'a> {
    /// Starts chromedriver in `ns` and opens a headless Chromium session with a window of
    /// `width` x `height` pixels.
    pub fn start(ns: &'a Netns, width: u32, height: u32) -> Browser<'a> {
        let profile = tempfile::Builder::new()
            .prefix("sluice-chromium-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir: {e}"));
        let mut command = ns.command("chromedriver");
        command
            .arg(format!("--port={DRIVER_PORT}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let driver = ns.spawn(command);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "args": [
                    "--headless=new",
                    // The tests run as root, where Chromium's sandbox refuses to start.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }),
        );
        let url = format!("http://127.0.0.1:{DRIVER_PORT}");
        let client = eventually(Duration::from_secs(30), || {
            ns.in_ns(|| {
                runtime.block_on(async {
                    ClientBuilder::new(HttpConnector::new())
                        .capabilities(caps.clone())
                        .connect(&url)
                        .await
                        .map_err(|e| format!("opening a chromedriver session: {e}"))
                })
            })
        });
        Browser {
            ns,
            runtime,
            client: Some(client),
            _driver: driver,
            _profile: profile,
        }
    }

    /// Runs `f` with the session, on a thread inside the namespace.
    fn with<T: Send>(
        &self,
        f: impl AsyncFnOnce(&Client) -> Result<T, fantoccini::error::CmdError> + Send,
    ) -> Result<T, String> {
        let client = self
            .client
            .as_ref()
            .unwrap_or_else(|| panic!("browser session closed"));
        self.ns
            .in_ns(|| self.runtime.block_on(f(client)))
            .map_err(|e| e.to_string())
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) {
        self.with(async |c| c.goto(url).await)
            .unwrap_or_else(|e| panic!("opening {url}: {e}"));
    }

    /// The visible text of the first element matching the CSS selector.
    pub fn text(&self, css: &str) -> Result<String, String> {
        self.fresh(|| self.with(async |c| c.find(Locator::Css(css)).await?.text().await))
    }

    /// Clicks the first element matching the CSS selector.
    pub fn click(&self, css: &str) -> Result<(), String> {
        self.fresh(|| self.with(async |c| c.find(Locator::Css(css)).await?.click().await))
    }

    /// Runs `act` again when the element it found was replaced before it could be used:
    /// the page redraws its tables every second, so a find and a read can straddle a redraw.
    fn fresh<T>(&self, act: impl Fn() -> Result<T, String>) -> Result<T, String> {
        let mut result = act();
        for _ in 0..5 {
            match &result {
                Err(e) if e.contains("stale element") => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    result = act();
                }
                _ => break,
            }
        }
        result
    }

    /// Saves a PNG of the window to `path`.
    pub fn screenshot(&self, path: &Path) {
        let png = self
            .with(async |c| c.screenshot().await)
            .unwrap_or_else(|e| panic!("screenshot: {e}"));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self
                .ns
                .in_ns(|| self.runtime.block_on(async { client.close().await }));
        }
    }
}
