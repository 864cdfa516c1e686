//! The programs the comparisons run, installed from Debian's packages when missing.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::shell::{self, step};

/// A program (or module) the bench needs and the Debian package that ships it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tool {
    /// An executable on PATH, or an absolute path that must exist.
    pub needs: &'static str,
    pub package: &'static str,
}

pub const NGINX: Tool = Tool {
    needs: "nginx",
    package: "nginx",
};
/// nginx's stream module (L4 proxying), a dynamic module in Debian.
pub const NGINX_STREAM: Tool = Tool {
    needs: NGINX_STREAM_MODULE,
    package: "libnginx-mod-stream",
};
pub const HAPROXY: Tool = Tool {
    needs: "haproxy",
    package: "haproxy",
};
pub const WRK: Tool = Tool {
    needs: "wrk",
    package: "wrk",
};
pub const H2LOAD: Tool = Tool {
    needs: "h2load",
    package: "nghttp2-client",
};
pub const OPENSSL: Tool = Tool {
    needs: "openssl",
    package: "openssl",
};
pub const ETHTOOL: Tool = Tool {
    needs: "ethtool",
    package: "ethtool",
};
pub const TASKSET: Tool = Tool {
    needs: "taskset",
    package: "util-linux",
};

/// Where Debian's `libnginx-mod-stream` puts the module.
pub const NGINX_STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// Installs the packages of the tools that are missing, saying so. Package scripts are told
/// not to start services (nginx and haproxy would otherwise start on the host).
pub fn ensure(tools: &[Tool]) -> Result<()> {
    let mut missing: Vec<&str> = tools
        .iter()
        .filter(|t| !present(t.needs))
        .map(|t| t.package)
        .collect();
    missing.sort_unstable();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    step(
        "Installing",
        &format!(
            "{} (apt-get; the bench needs them and they are missing)",
            missing.join(" ")
        ),
    );
    if which("apt-get").is_none() {
        bail!(
            "missing {}, and there is no apt-get to install them: install them by hand",
            missing.join(" ")
        );
    }
    let _no_services = NoServiceStarts::new()?;
    let install = || {
        let mut cmd = Command::new("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing);
        cmd
    };
    if shell::output(&mut install()).is_err() {
        // The package lists may be missing or stale on a fresh machine.
        shell::run(
            Command::new("apt-get").arg("update"),
            "apt-get update failed; check the machine's package sources",
        )?;
        shell::run(
            &mut install(),
            "apt-get install failed; the output above says why",
        )?;
    }
    let still: Vec<&str> = tools
        .iter()
        .filter(|t| !present(t.needs))
        .map(|t| t.needs)
        .collect();
    if !still.is_empty() {
        bail!("installed {}, yet {still:?} are missing", missing.join(" "));
    }
    Ok(())
}

fn present(needs: &str) -> bool {
    if needs.starts_with('/') {
        Path::new(needs).exists()
    } else {
        which(needs).is_some()
    }
}

/// The path of `program` on PATH (or in the sbin folders, which a sudo PATH may lack).
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(Into::into))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// `/usr/sbin/policy-rc.d` answering 101 ("action forbidden") while packages install, so
/// their scripts start no daemon; removed on drop. Left alone when the machine has one.
struct NoServiceStarts(Option<&'static str>);

impl NoServiceStarts {
    const PATH: &'static str = "/usr/sbin/policy-rc.d";

    fn new() -> Result<NoServiceStarts> {
        if Path::new(Self::PATH).exists() {
            return Ok(NoServiceStarts(None));
        }
        std::fs::write(Self::PATH, "#!/bin/sh\nexit 101\n")
            .with_context(|| format!("writing {}", Self::PATH))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(Self::PATH, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {} executable", Self::PATH))?;
        Ok(NoServiceStarts(Some(Self::PATH)))
    }
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        if let Some(path) = self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}
