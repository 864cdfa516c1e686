//! The L4 contenders' configs: both ports of the VIP spread over both backends. Sluice forwards
//! in the kernel by DSR; HAProxy (TCP mode) and nginx (stream) terminate the client's
//! connection and open one to a backend, round robin, with one thread / worker each.

use std::path::Path;

use super::topology::{BACKENDS, RR_PORT, SINK_PORT, VIP};
use crate::bench::agent::ADMIN;
use crate::bench::tools::NGINX_STREAM_MODULE;

/// Sluice: the XDP program on the load balancer's eth0, two DSR services, no health checks.
pub fn sluice() -> String {
    let mut text = format!(
        "[admin]\nlisten = \"{ADMIN}\"\n\n[[interface]]\nname = \"eth0\"\nxdp_mode = \"native\"\n"
    );
    for (name, port) in [("rr", RR_PORT), ("sink", SINK_PORT)] {
        let backends: Vec<String> = BACKENDS
            .iter()
            .map(|b| format!("{{ address = \"{b}\", port = {port} }}"))
            .collect();
        text += &format!(
            "
[[pool]]
name = \"{name}\"
health_check = {{ kind = \"none\" }}
backend = [{backends}]

[[service]]
name = \"{name}\"
vip = \"{VIP}\"
port = {port}
protocol = \"tcp\"
l4 = {{ mode = \"dsr\", pool = \"{name}\" }}
",
            backends = backends.join(", ")
        );
    }
    text
}

/// HAProxy in TCP mode, one thread.
pub fn haproxy() -> String {
    let mut text = String::from(
        "global
  nbthread 1
  maxconn 8000

defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
",
    );
    for (name, port) in [("rr", RR_PORT), ("sink", SINK_PORT)] {
        text += &format!(
            "\nfrontend {name}\n  bind {VIP}:{port}\n  default_backend {name}\n\nbackend {name}\n  balance roundrobin\n"
        );
        for (i, b) in BACKENDS.iter().enumerate() {
            text += &format!("  server b{i} {b}:{port}\n");
        }
    }
    text
}

/// nginx's stream module, one worker; half-closed connections pass (the throughput client
/// closes its sending side and waits for the backend's count).
pub fn nginx(dir: &Path) -> String {
    let mut text = format!(
        "load_module {NGINX_STREAM_MODULE};
worker_processes 1;
worker_rlimit_nofile 16384;
daemon off;
pid {dir}/l4-nginx.pid;
events {{ worker_connections 8192; }}
stream {{
",
        dir = dir.display()
    );
    for (name, port) in [("rr", RR_PORT), ("sink", SINK_PORT)] {
        text += &format!("  upstream {name} {{\n");
        for b in BACKENDS {
            text += &format!("    server {b}:{port};\n");
        }
        text += &format!(
            "  }}\n  server {{\n    listen {VIP}:{port} backlog=4096;\n    proxy_pass {name};\n    proxy_half_close on;\n  }}\n"
        );
    }
    text += "}\n";
    text
}
