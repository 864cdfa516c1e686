//! Watching the config file, so saving it reloads the agent like SIGHUP does. The folder is
//! watched rather than the file: editors often save by writing a new file and renaming it
//! over the old one, which a watch on the old file would miss.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// How long to wait for a burst of writes (truncate, write, close) to end before reloading.
pub const SETTLE: Duration = Duration::from_millis(200);

/// A running watch; dropping it stops watching.
pub struct ConfigWatch {
    _watcher: RecommendedWatcher,
    changes: mpsc::Receiver<()>,
}

impl ConfigWatch {
    /// Starts watching `path`'s folder for changes to `path`.
    pub fn start(path: &Path) -> Result<Self> {
        let name: OsString = path
            .file_name()
            .context("the config path names no file")?
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
            .context("starting the config file watch")?;
        watcher
            .watch(&folder, RecursiveMode::NonRecursive)
            .with_context(|| format!("watching {}", folder.display()))?;
        Ok(Self {
            _watcher: watcher,
            changes,
        })
    }

    /// Waits for the file to change. Cancel-safe, for `select!`; call [`ConfigWatch::settle`]
    /// before reading the file.
    pub async fn changed(&mut self) -> Option<()> {
        self.changes.recv().await
    }

    /// Waits until the file has been quiet for [`SETTLE`], so a reload reads a whole write.
    pub async fn settle(&mut self) {
        loop {
            tokio::time::sleep(SETTLE).await;
            let mut more = false;
            while self.changes.try_recv().is_ok() {
                more = true;
            }
            if !more {
                return;
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
        let seen = tokio::time::timeout(Duration::from_secs(5), watch.changed()).await;
        assert_eq!(seen.ok().flatten(), Some(()), "an in-place write");
        watch.settle().await;

        let staged = dir.join(".sluice.toml.new");
        std::fs::write(&staged, "c").unwrap_or_else(|e| panic!("{e}"));
        std::fs::rename(&staged, &path).unwrap_or_else(|e| panic!("{e}"));
        let seen = tokio::time::timeout(Duration::from_secs(5), watch.changed()).await;
        assert_eq!(seen.ok().flatten(), Some(()), "a rename over the file");
        watch.settle().await;

        std::fs::write(dir.join("other.toml"), "x").unwrap_or_else(|e| panic!("{e}"));
        let seen = tokio::time::timeout(Duration::from_millis(600), watch.changed()).await;
        assert!(seen.is_err(), "other files are ignored");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sluice-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        dir
    }
}
