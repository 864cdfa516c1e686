//! L7 config reloads: new requests see new routes, pools and certificates while listening
//! sockets and client connections stay; removed services stop accepting but let requests in
//! flight finish; an invalid config, whichever way the reload arrives (SIGHUP, a save of
//! the watched file, `POST /reload`, `sluice reload`), is rejected once, logged and counted,
//! and changes nothing.

mod l7_support;

use std::net::SocketAddr;
use std::time::Duration;

use l7_support::admin::Reloads;
use l7_support::certs::{TestCa, certificate};
use l7_support::client::{H1, get, tls_connect};
use l7_support::{AGENT_TIMEOUT, Backend, Lab, Mode, forward_all, local, pool, service};
use rustls::version::{TLS12, TLS13};
use sluice_tests::{eventually, eventually_async, privileged};

fn direct(body: &str) -> String {
    format!(
        "[[service.l7.virtual_host]]\nname = \"all\"\ndomains = [\"*\"]\n\
         [[service.l7.virtual_host.route]]\nmatch = {{ path_prefix = \"/app\" }}\nforward = {{ pool = \"app\" }}\n\
         [[service.l7.virtual_host.route]]\nmatch = {{ path_prefix = \"/\" }}\n\
         direct_response = {{ status = 200, body = \"{body}\" }}\n"
    )
}

#[test]
fn new_requests_see_new_routes_and_pools_on_the_same_connection() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    let one = Backend::start(&lab.ns, "one", local(9001), Mode::Echo);
    let two = Backend::start(&lab.ns, "two", local(9002), Mode::Echo);
    let listen = local(8080);
    let config = |body: &str, backend: &Backend| {
        format!(
            "{}{}{}",
            pool("app", &[backend], &[], ""),
            service("svc", listen, ""),
            direct(body)
        )
    };
    lab.start(&config("v1", &one));
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let client = lab.ns.spawn_task(async move {
        let mut c = H1::connect(listen).await.expect("connect");
        assert_eq!(c.send(get("x", "/")).await.expect("reply").text(), "v1");
        assert_eq!(c.send(get("x", "/app")).await.expect("reply").text(), "one");
        let _ = done_tx.send(());
        // Wait for the reload, on the same keep-alive connection.
        tokio::task::spawn_blocking(move || rx.recv())
            .await
            .expect("join")
            .expect("reloaded");
        assert_eq!(c.send(get("x", "/")).await.expect("reply").text(), "v2");
        assert_eq!(c.send(get("x", "/app")).await.expect("reply").text(), "two");
    });
    done_rx.recv().expect("first requests done");
    assert!(
        lab.reload(&config("v2", &two)),
        "reload applied; log:\n{}",
        lab.log()
    );
    tx.send(()).expect("signal");
    client.join();
    let reply = lab.run(async move { H1::connect(listen).await?.send(get("x", "/")).await });
    assert_eq!(reply.expect("new connection").text(), "v2");
    lab.stop();
}

async fn refused(addr: SocketAddr) -> Result<(), String> {
    match tokio::net::TcpStream::connect(addr).await {
        Ok(_) => Err(format!("{addr} still accepts")),
        Err(_) => Ok(()),
    }
}

#[test]
fn listeners_come_and_go_and_requests_in_flight_finish() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    let app = Backend::start(&lab.ns, "app", local(9001), Mode::Echo);
    let (kept, removed, added) = (local(8080), local(8081), local(8082));
    let app_pool = pool("app", &[&app], &[], "");
    let before = format!(
        "{app_pool}{}{}{}{}",
        service("kept", kept, ""),
        forward_all("app"),
        service("removed", removed, ""),
        forward_all("app"),
    );
    let after = format!(
        "{app_pool}{}{}{}{}",
        service("kept", kept, ""),
        forward_all("app"),
        service("added", added, ""),
        forward_all("app"),
    );
    lab.start(&before);
    let slow = lab.ns.spawn_task(async move {
        let mut c = H1::connect(removed).await.expect("connect");
        c.send(get("x", "/sleep/1500")).await
    });
    // The slow request is at the backend before the reload.
    sluice_tests::eventually(Duration::from_secs(5), || {
        if app.heads() == 1 {
            Ok(())
        } else {
            Err("slow request not at the backend".into())
        }
    });
    assert!(lab.reload(&after), "reload applied; log:\n{}", lab.log());
    let reply = slow.join().expect("the request in flight finished");
    assert_eq!(reply.text(), "app");
    lab.run(async move {
        eventually_async(Duration::from_secs(5), || refused(removed)).await;
        let reply = H1::connect(added)
            .await
            .expect("added")
            .send(get("x", "/"))
            .await;
        assert_eq!(reply.expect("reply").text(), "app");
        let reply = H1::connect(kept)
            .await
            .expect("kept")
            .send(get("x", "/"))
            .await;
        assert_eq!(reply.expect("reply").text(), "app");
    });
    lab.stop();
}

/// The ways a reload reaches the agent.
#[derive(Clone, Copy, Debug)]
enum Trigger {
    Sighup,
    FileSave,
    PostReload,
    Cli,
}

#[test]
fn an_invalid_config_is_rejected_once_by_every_trigger_and_changes_nothing() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    let listen = local(8080);
    let app = Backend::start(&lab.ns, "app", local(9001), Mode::Echo);
    let config = |body: &str, pool_name: &str| {
        format!(
            "{}{}{}",
            pool("app", &[&app], &[], ""),
            service("svc", listen, ""),
            direct(body).replace("pool = \"app\"", &format!("pool = \"{pool_name}\""))
        )
    };
    lab.start(&config("v1", "app"));
    let answer = |lab: &Lab| {
        let reply = lab.run(async move { H1::connect(listen).await?.send(get("x", "/")).await });
        reply.map(|r| r.text())
    };
    for trigger in [
        Trigger::Sighup,
        Trigger::FileSave,
        Trigger::PostReload,
        Trigger::Cli,
    ] {
        // Valid TOML with a route to a pool that does not exist; the name tells the triggers
        // apart in the log.
        let missing = format!("missing-{trigger:?}").to_lowercase();
        let error = format!("pool \"{missing}\" is not defined");
        let before = lab.reloads();
        let logged_before = lab.log().len();
        lab.save_config(&config("v2", &missing));
        match trigger {
            Trigger::Sighup => lab.agent().reload(),
            Trigger::FileSave => {}
            Trigger::PostReload => {
                let answer = lab.admin("POST", "/reload");
                assert!(
                    answer.status == 400
                        && answer.body.contains("config rejected")
                        && answer.body.contains(&error),
                    "POST /reload: {answer:?}"
                );
            }
            Trigger::Cli => {
                let (ok, out) = lab.cli(&["reload"]);
                assert!(
                    !ok && out.contains("config rejected") && out.contains(&error),
                    "sluice reload: {out}"
                );
            }
        }
        eventually(AGENT_TIMEOUT, || {
            let now = lab.reloads();
            if now.failure > before.failure {
                Ok(())
            } else {
                Err(format!("{trigger:?}: no rejection counted yet: {now:?}"))
            }
        });
        // A second verdict on the same file (the watch and the trigger both reloading it)
        // would come within the watch's settle time.
        std::thread::sleep(Duration::from_millis(600));
        let after = lab.reloads();
        let log = lab.log();
        let logged = &log[logged_before..];
        // The watch skips a file the trigger already read, but a trigger that reaches a
        // starved agent more than the settle time (200 ms) after the save comes after the
        // watch's own reload, and is a verdict of its own: each is counted and logged once.
        let by_watch = logged.matches("the config file changed").count();
        let verdicts = by_watch + usize::from(!matches!(trigger, Trigger::FileSave));
        assert!(
            (1..=2).contains(&verdicts) && by_watch <= 1,
            "{trigger:?}: {by_watch} reloads by the file watch:\n{logged}"
        );
        let expected = Reloads {
            failure: before.failure + verdicts as u64,
            ..before
        };
        assert_eq!(
            after, expected,
            "{trigger:?}: rejected once ({by_watch} by the file watch), nothing applied"
        );
        assert_eq!(
            logged.matches("config rejected").count(),
            verdicts,
            "{trigger:?}: one rejection logged per verdict:\n{logged}"
        );
        assert!(
            logged
                .lines()
                .any(|line| line.contains("ERROR") && line.contains(&error)),
            "{trigger:?}: the error is logged:\n{logged}"
        );
        assert_eq!(
            answer(&lab).as_deref(),
            Ok("v1"),
            "{trigger:?}: the running config still answers"
        );
    }
    // Rejections leave the agent able to apply the next valid config.
    lab.save_config(&config("v2", "app"));
    eventually(AGENT_TIMEOUT, || match answer(&lab) {
        Ok(text) if text == "v2" => Ok(()),
        other => Err(format!("the valid config is not applied: {other:?}")),
    });
    lab.stop();
}

#[test]
fn new_connections_get_a_reloaded_certificate() {
    if !privileged() {
        return;
    }
    let ca = TestCa::new();
    let old = ca.issue("old", &["a.test"]);
    let new = ca.issue("new", &["a.test"]);
    let mut lab = Lab::new();
    let listen = local(8443);
    let config = |leaf| {
        format!(
            "{}{}{}\n[service.l7.tls]\ncertificates = [\"site\"]\n{}",
            certificate("site", leaf, &["a.test"]),
            l7_support::pool_at("app", &[local(9)], ""),
            service("site", listen, ""),
            direct("tls"),
        )
    };
    lab.start(&config(&old));
    let client = ca.client(&["http/1.1"], &[&TLS13, &TLS12]);
    let presented = |client| async move {
        let tls = tls_connect(listen, client, Some("a.test"))
            .await
            .expect("handshake");
        tls.get_ref().1.peer_certificates().expect("certificate")[0].clone()
    };
    let first = lab.run(presented(client.clone()));
    assert!(first == old.der);
    assert!(
        lab.reload(&config(&new)),
        "reload applied; log:\n{}",
        lab.log()
    );
    let second = lab.run(presented(client));
    assert!(second == new.der, "the new certificate is served");
    lab.stop();
}
