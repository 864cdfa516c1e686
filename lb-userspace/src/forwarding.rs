//! The XDP program asks the kernel's FIB where to send L4 packets, and the kernel answers
//! only for interfaces that forward. Checked up front so a missing sysctl is a clear error
//! rather than every packet quietly passed up.

use std::net::IpAddr;

use anyhow::{Result, bail};

use crate::config::{Config, ServiceKind};

/// Fails when an L4 service needs forwarding that is off on an attached interface.
pub fn check(config: &Config) -> Result<()> {
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
            if read(&key) == Some(false) {
                off.push(key);
            }
        }
    }
    // IPv6 forwarding for the FIB helper is the namespace-wide switch.
    if v6 && read("net/ipv6/conf/all/forwarding") == Some(false) {
        off.push("net/ipv6/conf/all/forwarding".into());
    }
    if !off.is_empty() {
        let keys: Vec<String> = off.iter().map(|k| k.replace('/', ".")).collect();
        bail!(
            "L4 services need IP forwarding, which is off: {}. Enable it (e.g. `sysctl -w {}=1`)",
            keys.join(", "),
            keys[0]
        );
    }
    Ok(())
}

/// A boolean sysctl under /proc/sys; `None` when it does not exist (e.g. the interface is
/// missing, which attaching reports more clearly).
fn read(key: &str) -> Option<bool> {
    let value = std::fs::read_to_string(format!("/proc/sys/{key}")).ok()?;
    Some(value.trim() != "0")
}
