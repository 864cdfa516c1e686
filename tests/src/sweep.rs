//! Removal of namespaces left behind by test processes that were killed before their guards ran.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::sync::Once;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::netns::{NETNS_DIR, PREFIX};

/// Runs [`sweep_stale_namespaces`] once per process, before the first namespace is created.
pub(crate) fn sweep_once() {
    static SWEEP: Once = Once::new();
    SWEEP.call_once(|| {
        for name in sweep_stale_namespaces() {
            eprintln!("sluice-tests: removed stale netns {name}");
        }
    });
}

/// Deletes every `slc-<pid>-...` namespace whose pid is no longer alive, kills the processes
/// still inside it, and returns the names it deleted. Namespaces of live processes
/// (another test binary running now) are left alone. Runs by itself before the first
/// [`Netns::new`](crate::Netns::new) of a process; errors are reported on stderr, never fatal.
pub fn sweep_stale_namespaces() -> Vec<String> {
    let entries = match std::fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries,
        // No namespace was ever named on this machine.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            eprintln!("sluice-tests: reading {NETNS_DIR}: {e}");
            return Vec::new();
        }
    };
    let nsfs_dev = std::fs::metadata("/proc/self/ns/net").ok().map(|m| m.dev());
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        // Remember which namespace the name stands for, delete the name so nothing can enter
        // it any more, then kill what is still inside: in the other order a process could
        // slip in between.
        // A name whose file is not (yet) a namespace mount may be one `ip netns add` is
        // creating right now; without a namespace it holds nothing anyway.
        let Ok(netns) = std::fs::metadata(entry.path()) else {
            continue;
        };
        if Some(netns.dev()) != nsfs_dev {
            continue;
        }
        match Command::new("ip").args(["netns", "del", &name]).output() {
            Ok(out) if out.status.success() => {
                kill_processes_in(netns.dev(), netns.ino());
                removed.push(name);
            }
            // Another process's sweep deleted it first, and kills what is inside.
            Ok(_) if !entry.path().exists() => {}
            Ok(out) => eprintln!(
                "sluice-tests: ip netns del {name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!("sluice-tests: ip netns del {name}: {e}"),
        }
    }
    removed
}

/// The pid in a name of the form `slc-<pid>-<rest>`, if `name` has that form.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, rest) = rest.split_once('-')?;
    if rest.is_empty() {
        return None;
    }
    pid.parse().ok()
}

/// SIGKILLs every process whose network namespace is the nsfs inode `(dev, ino)`: children
/// of a killed test run, still inside its namespace.
fn kill_processes_in(dev: u64, ino: u64) {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(netns) = std::fs::metadata(entry.path().join("ns/net")) else {
            continue;
        };
        if netns.dev() == dev && netns.ino() == ino {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::owner_pid;

    #[test]
    fn parses_owner_pid() {
        assert_eq!(owner_pid("slc-123-4-client"), Some(123));
        assert_eq!(owner_pid("slc-123-"), None);
        assert_eq!(owner_pid("slc-abc-4-client"), None);
        assert_eq!(owner_pid("other-123-4"), None);
    }
}
