//! A bpffs directory of its own for one agent (or a line of agents restarting in it), removed
//! with everything pinned in it when dropped: the agent's data path outlives the agent, so the
//! test must take it down itself.

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Where the test agents' pins go: `/sys/fs/bpf/slc-<pid>-<counter>`.
#[derive(Debug)]
pub struct PinDir {
    path: PathBuf,
}

impl PinDir {
    /// A fresh, not yet created, unique directory on the host's bpffs. The first call of a
    /// process removes the directories of test processes that no longer run.
    pub fn new() -> PinDir {
        static SWEEP: Once = Once::new();
        SWEEP.call_once(sweep_stale);
        let id = COUNTER.fetch_add(1, Ordering::Relaxed);
        PinDir {
            path: PathBuf::from(format!("/sys/fs/bpf/slc-{}-{id}", std::process::id())),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every file pinned below the directory (maps and links), sorted.
    pub fn pinned(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        collect(&self.path, &mut found);
        found.sort();
        found
    }
}

impl Default for PinDir {
    fn default() -> Self {
        Self::new()
    }
}

/// Removes `/sys/fs/bpf/slc-<pid>-*` of pids that are gone (test processes killed before
/// their guards ran): their maps would stay in kernel memory.
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir("/sys/fs/bpf") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("slc-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        match std::fs::remove_dir_all(entry.path()) {
            Ok(()) => eprintln!("sluice-tests: removed stale pins {name}"),
            Err(e) => eprintln!("sluice-tests: removing stale pins {name}: {e}"),
        }
    }
}

fn collect(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, found);
        } else {
            found.push(path);
        }
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        // Unpinning the links detaches the program; unpinning the maps frees them.
        if self.path.exists()
            && let Err(e) = std::fs::remove_dir_all(&self.path)
        {
            eprintln!("sluice-tests: removing {}: {e}", self.path.display());
        }
    }
}
