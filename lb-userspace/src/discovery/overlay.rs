//! The config in force: the file's config with each discovered pool's backends filled in.

use std::collections::BTreeMap;

use tracing::warn;

use crate::config::{Backend, Config, ForwardingMode, PoolId, ServiceKind};

/// `file` with the backends of each pool in `discovered` (by pool name) put in. A pool
/// that discovery has not answered for yet stays empty. Backends a DSR service of the pool
/// could not reach (another port: DSR does not rewrite ports) are left out and logged.
pub fn effective(file: &Config, discovered: &BTreeMap<String, Vec<Backend>>) -> Config {
    let mut config = file.clone();
    for (i, pool) in config.pools.iter_mut().enumerate() {
        if pool.discovery.is_none() {
            continue;
        }
        let Some(backends) = discovered.get(&pool.name) else {
            pool.backends.clear();
            continue;
        };
        let dsr_ports: Vec<(u16, &str)> = file
            .services
            .iter()
            .filter_map(|s| match &s.kind {
                ServiceKind::L4(l4) if l4.pool == PoolId(i) && l4.mode == ForwardingMode::Dsr => {
                    Some((s.port, s.name.as_str()))
                }
                _ => None,
            })
            .collect();
        pool.backends = backends
            .iter()
            .filter(|b| {
                let clash = dsr_ports.iter().find(|(port, _)| *port != b.address.port());
                if let Some((port, service)) = clash {
                    warn!(
                        pool = %pool.name,
                        backend = %b.address,
                        "discovered backend left out: dsr service {service} is on port {port} and dsr does not rewrite ports"
                    );
                }
                clash.is_none()
            })
            .cloned()
            .collect();
    }
    config
}
