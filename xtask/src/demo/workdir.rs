//! The demo's folder under the temp directory: a copy of `config/demo.toml` for the agent
//! (the reload step edits it, never the original) and the certificate pair it names.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::workspace;

/// The demo's folder: the config the agent runs, the certificates it names, the agent's
/// log. Removed on drop.
pub struct WorkDir {
    pub path: PathBuf,
}

impl WorkDir {
    pub fn create() -> Result<WorkDir> {
        use std::os::unix::fs::DirBuilderExt;
        let path = std::env::temp_dir().join(format!("sluice-demo-{}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        let dir = WorkDir { path };
        let source = workspace::root().join("config");
        std::fs::copy(source.join("demo.toml"), dir.config())
            .with_context(|| format!("copying {}", source.join("demo.toml").display()))?;
        // demo.toml names its certificate relative to its own folder.
        let certs = dir.path.join("certs");
        std::fs::create_dir(&certs).with_context(|| format!("creating {}", certs.display()))?;
        for file in ["example.crt", "example.key"] {
            let from = source.join("certs").join(file);
            std::fs::copy(&from, certs.join(file))
                .with_context(|| format!("copying {}", from.display()))?;
        }
        Ok(dir)
    }

    /// Removes the folders of demos that were killed (SIGKILL) before cleaning up.
    pub fn sweep_stale() {
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix("sluice-demo-")
                .and_then(|pid| pid.parse::<u32>().ok())
            else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }

    pub fn config(&self) -> PathBuf {
        self.path.join("demo.toml")
    }

    /// The certificate the client trusts.
    pub fn certificate(&self) -> PathBuf {
        self.path.join("certs").join("example.crt")
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_dir_all(&self.path) {
            eprintln!("demo: removing {}: {err}", self.path.display());
        }
    }
}
