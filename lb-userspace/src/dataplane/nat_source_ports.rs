//! The source ports NAT backends reply from, as the XDP program's bit set: a packet for no
//! service is looked up as a NAT reply only when it comes from one of them.

use aya::Ebpf;
use aya::maps::{Array, MapData};
use lb_common::limits::{NAT_SOURCE_PORT_WORDS, nat_source_port_bit};
use lb_common::maps;

use super::DataplaneError;
use crate::balancer::{DesiredState, ServiceMode};

/// The program's port set and what this agent wrote into it. The map is not pinned: each
/// program starts with it empty, and the first [`NatSourcePorts::apply`] fills it.
pub struct NatSourcePorts {
    map: Array<MapData, u64>,
    applied: Vec<u64>,
}

impl NatSourcePorts {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, DataplaneError> {
        let map = ebpf
            .take_map(maps::NAT_SOURCE_PORTS)
            .ok_or(DataplaneError::MissingMap(maps::NAT_SOURCE_PORTS))?;
        Ok(Self {
            map: Array::try_from(map).map_err(DataplaneError::map)?,
            applied: vec![0; NAT_SOURCE_PORT_WORDS as usize],
        })
    }

    /// Adds the ports of `desired`'s NAT backends, writing only the words that change.
    pub fn apply(&mut self, desired: &DesiredState) -> Result<(), DataplaneError> {
        let wanted = with_nat_source_ports(&self.applied, desired);
        for (index, (&word, &before)) in wanted.iter().zip(&self.applied).enumerate() {
            if word != before {
                self.map
                    .set(index as u32, word, 0)
                    .map_err(DataplaneError::map)?;
            }
        }
        self.applied = wanted;
        Ok(())
    }
}

/// `applied` with the port of every backend of every NAT service of `desired` added. Ports
/// are never taken out while the program runs: replies of flows still open on a backend that
/// left the config are translated back as before, and a port set that is too wide costs only
/// a lookup that finds nothing.
pub fn with_nat_source_ports(applied: &[u64], desired: &DesiredState) -> Vec<u64> {
    let mut words = applied.to_vec();
    words.resize(NAT_SOURCE_PORT_WORDS as usize, 0);
    let nat_backends = desired
        .services
        .values()
        .filter_map(|s| s.l4.as_ref())
        .filter(|l4| l4.mode == ServiceMode::Nat)
        .flat_map(|l4| &l4.backends);
    for backend in nat_backends {
        let (word, bit) = nat_source_port_bit(backend.address.port());
        if let Some(word) = words.get_mut(word as usize) {
            *word |= bit;
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::SocketAddr;

    use lb_common::service::ServiceKey;

    use super::*;
    use crate::balancer::{DesiredBackend, DesiredL4, DesiredService};

    fn service(port: u16, mode: ServiceMode, backends: &[&str]) -> (ServiceKey, DesiredService) {
        let key = ServiceKey {
            addr: [0x0a00_0001u32.to_be(), 0, 0, 0],
            port: port.to_be(),
            protocol: lb_common::addr::PROTO_TCP,
            family: lb_common::addr::FAMILY_V4,
        };
        let backends = backends
            .iter()
            .map(|a| DesiredBackend {
                pool: "p".into(),
                address: a.parse::<SocketAddr>().expect("a socket address"),
            })
            .collect();
        let l4 = DesiredL4 {
            mode,
            refuse_when_empty: false,
            hash_seed: 0,
            table_size: 7,
            backends,
            table: None,
        };
        let service = DesiredService {
            name: format!("s{port}"),
            key,
            l4: Some(l4),
        };
        (key, service)
    }

    fn has(words: &[u64], port: u16) -> bool {
        let (word, bit) = nat_source_port_bit(port);
        words[word as usize] & bit != 0
    }

    #[test]
    fn nat_backends_ports_are_set_and_dsr_ones_are_not() {
        let desired = DesiredState {
            services: BTreeMap::from([
                service(80, ServiceMode::Nat, &["10.1.0.1:8080", "[fd00::1]:65535"]),
                service(81, ServiceMode::Dsr, &["10.1.0.2:9090"]),
            ]),
        };
        let words = with_nat_source_ports(&[], &desired);
        assert_eq!(words.len(), NAT_SOURCE_PORT_WORDS as usize);
        assert!(has(&words, 8080) && has(&words, 65535));
        assert!(!has(&words, 9090) && !has(&words, 80) && !has(&words, 8081));
        assert_eq!(words.iter().map(|w| w.count_ones()).sum::<u32>(), 2);
    }

    #[test]
    fn ports_stay_once_set() {
        let before = DesiredState {
            services: BTreeMap::from([service(80, ServiceMode::Nat, &["10.1.0.1:8080"])]),
        };
        let after = DesiredState {
            services: BTreeMap::from([service(80, ServiceMode::Nat, &["10.1.0.1:8443"])]),
        };
        let words = with_nat_source_ports(&with_nat_source_ports(&[], &before), &after);
        assert!(has(&words, 8080) && has(&words, 8443));
    }
}
