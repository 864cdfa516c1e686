//! Watching the config file, so saving it reloads the agent like SIGHUP does. The folder is
//! watched rather than the file: editors often save by writing a new file and renaming it
//! over the old one, which a watch on the old file would miss.
//!
//! The settle time runs as a deadline polled by the agent's loop, not as a sleep inside it:
//! a loop that slept there would hold back a SIGHUP or `POST /reload` sent right after the
//! save (and health changes) until the file went quiet, then reload the same file twice.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long to wait for a burst of writes (truncate, write, close) to end before reloading.
pub const SETTLE: Duration = Duration::from_millis(200);

/// Why the config file cannot be watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The path ends in `..` or is a root.
    #[error("the config path names no file")]
    NoFileName,
    /// inotify could not be set up.
    #[error("starting the config file watch")]
    Start(#[source] notify::Error),
    /// The folder could not be watched.
    #[error("watching {}", folder.display())]
    Folder {
        /// The config file's folder.
        folder: PathBuf,
        /// What notify said.
        #[source]
        source: notify::Error,
    },
}

/// A running watch; dropping it stops watching.
pub struct ConfigWatch {
    _watcher: RecommendedWatcher,
    changes: mpsc::Receiver<()>,
    /// When the file will have been quiet for [`SETTLE`], after a change not yet reported.
    quiet_at: Option<Instant>,
}

impl ConfigWatch {
    /// Starts watching `path`'s folder for changes to `path`.
    pub fn start(path: &Path) -> Result<Self, WatchError> {
        let name: OsString = path
            .file_name()
            .ok_or(WatchError::NoFileName)?
            .to_os_string();
        let folder: PathBuf = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        // One pending signal is enough: a reload reads the file as it is then.
        let (tx, changes) = mpsc::channel(1);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else { return };
                let relevant = matches!(event.kind, EventKind::Create(_) | EventKind::Modify(_))
                    && event
                        .paths
                        .iter()
                        .any(|p| p.file_name() == Some(name.as_os_str()));
                if relevant {
                    let _ = tx.try_send(());
                }
            })
            .map_err(WatchError::Start)?;
        watcher
            .watch(&folder, RecursiveMode::NonRecursive)
            .map_err(|source| WatchError::Folder {
                folder: folder.clone(),
                source,
            })?;
        Ok(Self {
            _watcher: watcher,
            changes,
            quiet_at: None,
        })
    }

    /// Waits until the file has changed and then stayed quiet for [`SETTLE`], so a reload
    /// reads a whole write. Cancel-safe, for `select!`: a change seen by a cancelled call is
    /// kept, and the next call waits out the rest of its settle time.
    pub async fn settled(&mut self) -> Option<()> {
        loop {
            let Some(quiet_at) = self.quiet_at else {
                self.changes.recv().await?;
                self.quiet_at = Some(Instant::now() + SETTLE);
                continue;
            };
            tokio::select! {
                change = self.changes.recv() => {
                    change?;
                    self.quiet_at = Some(Instant::now() + SETTLE);
                }
                () = tokio::time::sleep_until(quiet_at) => {
                    self.quiet_at = None;
                    return Some(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_write_and_a_rename_over_the_file_are_both_seen() {
        let dir = tempfile_dir();
        let path = dir.join("sluice.toml");
        std::fs::write(&path, "a").unwrap_or_else(|e| panic!("{e}"));
        let mut watch = ConfigWatch::start(&path).unwrap_or_else(|e| panic!("{e}"));

        std::fs::write(&path, "b").unwrap_or_else(|e| panic!("{e}"));
        let seen = tokio::time::timeout(Duration::from_secs(5), watch.settled()).await;
        assert_eq!(seen.ok().flatten(), Some(()), "an in-place write");

        let staged = dir.join(".sluice.toml.new");
        std::fs::write(&staged, "c").unwrap_or_else(|e| panic!("{e}"));
        std::fs::rename(&staged, &path).unwrap_or_else(|e| panic!("{e}"));
        let seen = tokio::time::timeout(Duration::from_secs(5), watch.settled()).await;
        assert_eq!(seen.ok().flatten(), Some(()), "a rename over the file");

        std::fs::write(dir.join("other.toml"), "x").unwrap_or_else(|e| panic!("{e}"));
        let seen = tokio::time::timeout(Duration::from_millis(600), watch.settled()).await;
        assert!(seen.is_err(), "other files are ignored");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sluice-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        dir
    }
}
