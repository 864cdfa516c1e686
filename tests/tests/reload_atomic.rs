//! A reload applies whole or not at all. With an l4 DSR service in the kernel and an l7
//! listener, a new config that would change both is refused (a key that is not its
//! certificate's, caught by validation) or fails while it is prepared (a listener that
//! cannot bind): the kernel's Maglev table, the routes and the config version stay exactly
//! as they were. The same change without the fault then applies, so the test can tell.

#[path = "l4_e2e_support/mod.rs"]
mod l4_e2e_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use l4_e2e_support::{Mode, Setup, V4};
use sluice_tests::{eventually, privileged, sluice_cli};

const WEB: &str = "127.0.0.1:8080";

/// An l7 service on 127.0.0.1:8080 answering `body`, plus `extra` services.
fn web(body: &str, extra: &str) -> String {
    format!(
        "{extra}[[service]]\nname = \"web\"\nvip = \"127.0.0.1\"\nport = 8080\nprotocol = \"tcp\"\n[service.l7]\n\
         [[service.l7.virtual_host]]\nname = \"v\"\ndomains = [\"*\"]\n\
         [[service.l7.virtual_host.route]]\nmatch = {{ path_prefix = \"/\" }}\n\
         direct_response = {{ status = 200, body = \"{body}\" }}\n"
    )
}

/// The body the l7 listener answers now, from inside the load balancer's namespace.
fn web_body(setup: &Setup) -> String {
    setup.lb().in_ns(|| {
        let addr: SocketAddr = WEB.parse().expect("address");
        let mut stream =
            TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("write");
        let mut reply = String::new();
        let _ = stream.read_to_string(&mut reply);
        reply
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or(reply)
    })
}

fn version(setup: &Setup) -> u64 {
    let (ok, status) = sluice_cli(setup.lb(), &["status"]);
    assert!(ok, "sluice status: {status}");
    let json: serde_json::Value = serde_json::from_str(&status).expect("status is JSON");
    json["config_version"].as_u64().expect("config_version")
}

/// Whether 40 new flows all land where the model over the first `active` backends says.
fn flows_follow(setup: &Setup, active: usize) -> Result<(), String> {
    let model = setup.model_for(V4.tcp_backend_port(Mode::Dsr), active);
    setup.client.in_ns(|| {
        for _ in 0..40 {
            let conn = setup.tcp_connect();
            let want = model.predict(conn.local, setup.tcp_vip(), 6);
            if conn.served_by != want {
                return Err(format!(
                    "flow {} went to {}, the table over {active} backends says {want}",
                    conn.local, conn.served_by
                ));
            }
        }
        Ok(())
    })
}

#[test]
fn a_failed_reload_changes_nothing_kernel_tables_included() {
    if !privileged() {
        return;
    }
    let setup = Setup::with_backends(&V4, Mode::Dsr, 3);
    setup.client.in_ns(|| setup.wait_for_first_tcp_flow());
    setup.reload_with(&web("v1", &setup.config_text_for(3)));
    assert!(setup.agent_log().contains("config reloaded"));
    assert_eq!(web_body(&setup), "v1");
    flows_follow(&setup, 3).unwrap_or_else(|e| panic!("{e}"));
    let applied = version(&setup);

    // 1. A fourth backend, a new route body, and a TLS listener whose key is not its
    //    certificate's: refused by validation.
    let dir = tempfile::tempdir().expect("temp dir");
    let site = rcgen::generate_simple_self_signed(vec!["a.test".into()]).expect("cert");
    let other = rcgen::generate_simple_self_signed(vec!["b.test".into()]).expect("cert");
    let cert = dir.path().join("site.crt");
    let key = dir.path().join("other.key");
    std::fs::write(&cert, site.cert.pem()).expect("write cert");
    std::fs::write(&key, other.signing_key.serialize_pem()).expect("write key");
    let tls = format!(
        "[[certificate]]\nname = \"site\"\ncert = {:?}\nkey = {:?}\n\
         [[service]]\nname = \"secure\"\nvip = \"127.0.0.1\"\nport = 8443\nprotocol = \"tcp\"\n\
         [service.l7]\ntls = {{ certificates = [\"site\"] }}\n\
         [[service.l7.virtual_host]]\nname = \"s\"\ndomains = [\"*\"]\n\
         [[service.l7.virtual_host.route]]\nmatch = {{ path_prefix = \"/\" }}\n\
         direct_response = {{ status = 200 }}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    setup.reload_with(&web("v2", &format!("{}{tls}", setup.config_text_for(4))));
    let log = setup.agent_log();
    assert!(log.contains("does not match certificate"), "{log}");

    // 2. The same change with a listener on an address the host does not have: valid, but
    //    it cannot be bound, so it fails before anything is applied.
    let unbindable = "[[service]]\nname = \"elsewhere\"\nvip = \"203.0.113.77\"\nport = 8080\nprotocol = \"tcp\"\n\
         [service.l7]\n[[service.l7.virtual_host]]\nname = \"e\"\ndomains = [\"*\"]\n\
         [[service.l7.virtual_host.route]]\nmatch = { path_prefix = \"/\" }\ndirect_response = { status = 200 }\n";
    setup.reload_with(&web(
        "v2",
        &format!("{}{unbindable}", setup.config_text_for(4)),
    ));
    let log = setup.agent_log();
    assert!(
        log.contains("reload failed") && log.contains("cannot listen on 203.0.113.77:8080"),
        "{log}"
    );

    // Nothing of either went live.
    assert_eq!(version(&setup), applied, "the config version moved");
    assert_eq!(web_body(&setup), "v1", "the route changed");
    flows_follow(&setup, 3).unwrap_or_else(|e| panic!("the kernel's Maglev table changed: {e}"));
    let (_, status) = sluice_cli(setup.lb(), &["status"]);
    assert_eq!(
        status.matches("\"address\": \"10.").count(),
        6,
        "three backends in each of the two pools: {status}"
    );

    // Without the faults the same change applies, kernel table included.
    setup.reload_with(&web("v2", &setup.config_text_for(4)));
    assert_eq!(version(&setup), applied + 1);
    assert_eq!(web_body(&setup), "v2");
    eventually(Duration::from_secs(10), || flows_follow(&setup, 4));
    drop(dir);
    setup.stop();
}
