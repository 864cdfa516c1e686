//! BIRD 2, the BGP daemon the scale-out tests run on the router and on every Sluice node:
//! one `bird` process per namespace, with its config, control socket and log in a temp
//! folder, killed on drop.

use std::path::PathBuf;
use std::process::Stdio;

use crate::{ChildGuard, Netns, workspace_root};

/// A running `bird -f` inside a namespace.
pub struct Bird {
    child: ChildGuard,
    dir: tempfile::TempDir,
}

impl Bird {
    /// Writes `config` and starts `bird` in the foreground inside `ns`. Panics when the
    /// config does not parse (`bird -p` first, so the message is BIRD's own).
    pub fn start(ns: &Netns, config: &str) -> Bird {
        let dir = tempfile::Builder::new()
            .prefix("sluice-bird-")
            .tempdir()
            .unwrap_or_else(|e| panic!("creating a temp folder: {e}"));
        let conf = dir.path().join("bird.conf");
        std::fs::write(&conf, config).unwrap_or_else(|e| panic!("writing {}: {e}", conf.display()));
        let check = ns
            .command("bird")
            .arg("-p")
            .arg("-c")
            .arg(&conf)
            .output()
            .unwrap_or_else(|e| panic!("running bird -p: {e}"));
        assert!(
            check.status.success(),
            "bird rejects its config: {}\n{config}",
            String::from_utf8_lossy(&check.stderr)
        );
        let log_path = dir.path().join("bird.log");
        let log = std::fs::File::create(&log_path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", log_path.display()));
        let stderr = log
            .try_clone()
            .unwrap_or_else(|e| panic!("duplicating the log file handle: {e}"));
        let mut command = ns.command("bird");
        command
            .arg("-f")
            .arg("-c")
            .arg(&conf)
            .arg("-s")
            .arg(dir.path().join("bird.ctl"))
            .arg("-P")
            .arg(dir.path().join("bird.pid"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr);
        let child = ns.spawn(command);
        Bird { child, dir }
    }

    /// The control socket, for `birdc -s`.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("bird.ctl")
    }

    /// Runs one `birdc` command (`show protocols`, ...) and returns what it printed.
    pub fn ctl(&self, command: &str) -> String {
        let output = std::process::Command::new("birdc")
            .arg("-s")
            .arg(self.socket())
            .args(command.split_whitespace())
            .output()
            .unwrap_or_else(|e| panic!("running birdc {command}: {e}"));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Everything BIRD has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bird.log")).unwrap_or_default()
    }

    /// Kills the daemon at once (SIGKILL), as a node that dies.
    pub fn kill(&mut self) {
        self.child.kill();
    }
}

/// The shipped `config/bird/<name>` with its `define NAME = value;` lines set to `values`.
/// Panics when a name has no `define` line, so the shipped file and the tests stay in step.
pub fn shipped_bird_config(name: &str, values: &[(&str, &str)]) -> String {
    let path = workspace_root().join("config/bird").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for (key, value) in values {
        let prefix = format!("define {key} =");
        let line = lines
            .iter_mut()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("{} has no `{prefix}` line", path.display()));
        *line = format!("{prefix} {value};");
    }
    lines.join("\n") + "\n"
}
