//! Checks made before touching the kernel, so a missing requirement gets a clear message
//! instead of an errno from deep inside a syscall.

use std::net::IpAddr;
use std::path::Path;

use tracing::warn;

use super::DataplaneError;
use crate::config::{Config, ServiceKind};

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Checks kernel BTF and the capabilities loading and attaching XDP needs, and raises the
/// memlock limit for kernels that still charge BPF maps to it.
pub fn preflight() -> Result<(), DataplaneError> {
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err(DataplaneError::NoBtf);
    }
    if let Some(caps) = effective_capabilities() {
        let has = |cap: u32| caps & (1u64 << cap) != 0;
        let bpf = has(CAP_BPF) || has(CAP_SYS_ADMIN);
        let mut missing = Vec::new();
        if !bpf {
            missing.push("CAP_BPF");
        }
        if !has(CAP_NET_ADMIN) {
            missing.push("CAP_NET_ADMIN");
        }
        if !has(CAP_PERFMON) && !has(CAP_SYS_ADMIN) {
            missing.push("CAP_PERFMON");
        }
        if !missing.is_empty() {
            return Err(DataplaneError::MissingCapabilities { missing });
        }
    }
    raise_memlock_limit();
    Ok(())
}

/// The process's effective capability set, from /proc/self/status.
fn effective_capabilities() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lift it so large maps load there.
/// Later kernels charge the memory cgroup instead, and the limit does not matter.
fn raise_memlock_limit() {
    if kernel_at_least(5, 11) {
        return;
    }
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: `limit` is a valid rlimit for the duration of the call.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) };
    if ret != 0 {
        warn!(
            error = %std::io::Error::last_os_error(),
            "could not raise RLIMIT_MEMLOCK (needs CAP_SYS_RESOURCE); loading large maps may fail \
             on this kernel (before 5.11)"
        );
    }
}

/// Whether the running kernel's release is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found >= (major, minor)
}

/// Fails when an L4 service needs IP forwarding that is off on an attached interface: the
/// program asks the kernel's FIB where to send packets, and the kernel answers only for
/// interfaces that forward. Checked up front so a missing sysctl is a clear error rather
/// than every packet quietly passed up.
pub fn forwarding(config: &Config) -> Result<(), DataplaneError> {
    let l4 = config
        .services
        .iter()
        .filter(|s| matches!(s.kind, ServiceKind::L4(_)));
    let (mut v4, mut v6) = (false, false);
    for service in l4 {
        match service.vip {
            IpAddr::V4(_) => v4 = true,
            IpAddr::V6(_) => v6 = true,
        }
    }
    let mut off = Vec::new();
    if v4 {
        for interface in &config.interfaces {
            let key = format!("net/ipv4/conf/{}/forwarding", interface.name);
            if sysctl_on(&key) == Some(false) {
                off.push(key);
            }
        }
    }
    // IPv6 forwarding for the FIB helper is the namespace-wide switch.
    if v6 && sysctl_on("net/ipv6/conf/all/forwarding") == Some(false) {
        off.push("net/ipv6/conf/all/forwarding".into());
    }
    if off.is_empty() {
        return Ok(());
    }
    Err(DataplaneError::ForwardingOff {
        sysctls: off.iter().map(|k| k.replace('/', ".")).collect(),
    })
}

/// A boolean sysctl under /proc/sys; `None` when it does not exist (e.g. the interface is
/// missing, which attaching reports more clearly).
fn sysctl_on(key: &str) -> Option<bool> {
    let value = std::fs::read_to_string(format!("/proc/sys/{key}")).ok()?;
    Some(value.trim() != "0")
}

#[cfg(test)]
mod tests {
    use super::DataplaneError;

    #[test]
    fn refusals_say_what_is_missing_and_how_to_fix_it() {
        let off = DataplaneError::ForwardingOff {
            sysctls: vec![
                "net.ipv4.ip_forward".into(),
                "net.ipv6.conf.all.forwarding".into(),
            ],
        };
        assert_eq!(
            off.to_string(),
            "L4 services need IP forwarding, which is off: net.ipv4.ip_forward, \
             net.ipv6.conf.all.forwarding. Enable it (e.g. `sysctl -w net.ipv4.ip_forward=1`)"
        );
        let caps = DataplaneError::MissingCapabilities {
            missing: vec!["CAP_BPF", "CAP_PERFMON"],
        };
        assert!(
            caps.to_string()
                .starts_with("missing capabilities CAP_BPF, CAP_PERFMON: run as root"),
            "{caps}"
        );
    }
}
