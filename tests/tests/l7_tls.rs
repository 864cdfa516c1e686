//! L7 end to end over TLS and the other listener kinds: certificates chosen by SNI, ALPN,
//! protocol versions, key checks at startup, h2c, and redirect-to-https listeners.

mod l7_support;

use std::time::Duration;

use l7_support::certs::{TestCa, certificate};
use l7_support::client::{H1, H2, get, raw_bytes, tls_connect};
use l7_support::{Backend, Lab, Mode, forward_all, local, pool, service};
use rustls::version::{TLS12, TLS13};
use sluice_tests::privileged;

#[test]
fn sni_picks_the_certificate_and_alpn_negotiates_h2() {
    if !privileged() {
        return;
    }
    let ca = TestCa::new();
    let first = ca.issue("first", &["a.test", "unknown.test", "127.0.0.1"]);
    let second = ca.issue("second", &["b.test", "x.wild.test"]);
    let mut lab = Lab::new();
    let app = Backend::start(&lab.ns, "app", local(9001), Mode::Echo);
    let listen = local(8443);
    let config = format!(
        "{}{}{}{}\n[service.l7.tls]\ncertificates = [\"first\", \"second\"]\n{}",
        certificate("first", &first, &["a.test"]),
        certificate("second", &second, &["b.test", "*.wild.test"]),
        pool("app", &[&app], &[], ""),
        service("site", listen, ""),
        forward_all("app"),
    );
    lab.start(&config);
    let both = ca.client(&["h2", "http/1.1"], &[&TLS13, &TLS12]);
    let h1_only = ca.client(&["http/1.1"], &[&TLS13, &TLS12]);
    let (first_der, second_der) = (first.der.clone(), second.der.clone());
    lab.run(async move {
        for (sni, want) in [
            (Some("a.test"), &first_der),
            (Some("b.test"), &second_der),
            (Some("x.wild.test"), &second_der),
            (Some("unknown.test"), &first_der),
            (None, &first_der),
        ] {
            let tls = tls_connect(listen, both.clone(), sni)
                .await
                .expect("handshake");
            let presented = tls.get_ref().1.peer_certificates().expect("a certificate")[0].clone();
            assert!(presented == *want, "SNI {sni:?} got the wrong certificate");
        }
        let tls = tls_connect(listen, both.clone(), Some("b.test"))
            .await
            .expect("handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let mut h2 = H2::over(tls).await.expect("h2");
        let reply = h2.send(get("b.test", "/")).await.expect("h2 reply");
        assert_eq!(reply.version, http::Version::HTTP_2);
        assert_eq!(reply.text(), "app");

        let tls = tls_connect(listen, h1_only, Some("a.test"))
            .await
            .expect("handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let mut h1 = H1::over(tls).await.expect("h1");
        let reply = h1.send(get("a.test", "/")).await.expect("h1 reply");
        assert_eq!(reply.version, http::Version::HTTP_11);
        assert_eq!(reply.text(), "app");
    });
    let seen = app.seen();
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter()
            .all(|s| s.header("x-forwarded-proto") == "https")
    );
    assert_eq!(seen[0].header("host"), "b.test", ":authority becomes Host");
    lab.stop();
}

/// A TLS 1.1 ClientHello (no supported_versions extension), as an old client sends it.
fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02];
    body.extend_from_slice(&[0x42; 32]);
    body.push(0);
    body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]);
    body.extend_from_slice(&[0x01, 0x00]);
    let mut handshake = vec![0x01, 0, (body.len() >> 8) as u8, body.len() as u8];
    handshake.extend_from_slice(&body);
    let mut record = vec![
        0x16,
        0x03,
        0x01,
        (handshake.len() >> 8) as u8,
        handshake.len() as u8,
    ];
    record.extend_from_slice(&handshake);
    record
}

#[test]
fn tls_versions_below_the_minimum_are_refused() {
    if !privileged() {
        return;
    }
    let ca = TestCa::new();
    let leaf = ca.issue("site", &["a.test"]);
    let mut lab = Lab::new();
    let app = Backend::start(&lab.ns, "app", local(9001), Mode::Echo);
    let (tls12, tls13) = (local(8443), local(9443));
    let config = format!(
        "{}{}{}\n[service.l7.tls]\ncertificates = [\"site\"]\n{}{}\n[service.l7.tls]\ncertificates = [\"site\"]\nmin_version = \"1.3\"\n{}",
        certificate("site", &leaf, &["a.test"]),
        pool("app", &[&app], &[], ""),
        service("v12", tls12, ""),
        forward_all("app"),
        service("v13", tls13, ""),
        forward_all("app"),
    );
    lab.start(&config);
    let only12 = ca.client(&["http/1.1"], &[&TLS12]);
    let only13 = ca.client(&["http/1.1"], &[&TLS13]);
    lab.run(async move {
        let reply = raw_bytes(tls12, &tls11_client_hello(), Duration::from_secs(5))
            .await
            .expect("raw");
        assert!(
            reply.first() != Some(&0x16),
            "a TLS 1.1 hello got a handshake answer: {reply:02x?}"
        );
        assert_eq!(
            reply.first(),
            Some(&0x15),
            "answered with an alert: {reply:02x?}"
        );
        tls_connect(tls12, only12.clone(), Some("a.test"))
            .await
            .expect("TLS 1.2 accepted");
        let refused = tls_connect(tls13, only12, Some("a.test")).await;
        assert!(
            refused.is_err(),
            "TLS 1.2 must be refused with min_version 1.3"
        );
        let tls = tls_connect(tls13, only13, Some("a.test"))
            .await
            .expect("TLS 1.3");
        let mut h1 = H1::over(tls).await.expect("h1");
        assert_eq!(
            h1.send(get("a.test", "/")).await.expect("reply").text(),
            "app"
        );
    });
    lab.stop();
}

#[test]
fn a_key_that_is_not_the_certificates_stops_startup() {
    if !privileged() {
        return;
    }
    let ca = TestCa::new();
    let mut leaf = ca.issue("site", &["a.test"]);
    let other = ca.issue("other", &["b.test"]);
    leaf.key = other.key.clone();
    let mut lab = Lab::new();
    let config = format!(
        "{}{}\n[service.l7.tls]\ncertificates = [\"site\"]\n{}",
        certificate("site", &leaf, &["a.test"]),
        service("site", local(8443), ""),
        "[[service.l7.virtual_host]]\nname = \"v\"\ndomains = [\"*\"]\n\
         [[service.l7.virtual_host.route]]\nmatch = { path_prefix = \"/\" }\ndirect_response = { status = 200 }\n",
    );
    let log = lab.start_failing(&config);
    assert!(log.contains("does not match"), "{log}");
    assert!(
        log.contains(&leaf.cert.display().to_string()),
        "names the certificate file: {log}"
    );
    assert!(
        log.contains(&other.key.display().to_string()),
        "names the key file: {log}"
    );
}

#[test]
fn a_vip_that_is_not_local_stops_startup_naming_service_and_address() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    let config = format!(
        "{}{}",
        service("remote", "192.0.2.99:8080".parse().expect("addr"), ""),
        "[[service.l7.virtual_host]]\nname = \"v\"\ndomains = [\"*\"]\n\
         [[service.l7.virtual_host.route]]\nmatch = { path_prefix = \"/\" }\ndirect_response = { status = 200 }\n",
    );
    let log = lab.start_failing(&config);
    assert!(
        log.contains("service \"remote\": cannot listen on 192.0.2.99:8080"),
        "{log}"
    );
    assert!(log.contains("ip addr add"), "says how to fix it: {log}");
}

#[test]
fn plain_listeners_take_h2c_prior_knowledge_unless_disabled() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    let app = Backend::start(&lab.ns, "app", local(9001), Mode::Echo);
    let (h2c, h1_only) = (local(8080), local(8081));
    let config = format!(
        "{}{}{}{}{}",
        pool("app", &[&app], &[], ""),
        service("h2c", h2c, ""),
        forward_all("app"),
        service("h1", h1_only, "h2c = false"),
        forward_all("app"),
    );
    lab.start(&config);
    lab.run(async move {
        let mut h2 = H2::connect(h2c).await.expect("h2c");
        let reply = h2.send(get("a.test", "/")).await.expect("h2c reply");
        assert_eq!(
            (reply.version, reply.text().as_str()),
            (http::Version::HTTP_2, "app")
        );
        let mut h1 = H1::connect(h2c).await.expect("h1");
        assert_eq!(
            h1.send(get("a.test", "/")).await.expect("h1 reply").text(),
            "app"
        );
        let refused = match H2::connect(h1_only).await {
            Ok(mut h2) => h2.send(get("a.test", "/")).await.is_err(),
            Err(_) => true,
        };
        assert!(refused, "h2c = false refuses HTTP/2 prior knowledge");
        let mut h1 = H1::connect(h1_only).await.expect("h1");
        assert_eq!(
            h1.send(get("a.test", "/")).await.expect("h1 reply").text(),
            "app"
        );
    });
    lab.stop();
}

#[test]
fn redirect_to_https_answers_every_request() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    let (to_8443, to_443) = (local(8080), local(8081));
    let config = format!(
        "{}{}",
        service("r1", to_8443, "redirect_to_https = 8443"),
        service("r2", to_443, "redirect_to_https = 443"),
    );
    lab.start(&config);
    lab.run(async move {
        let mut c = H1::connect(to_8443).await.expect("connect");
        let reply = c
            .send(get("www.a.test:8080", "/x/y?z=1"))
            .await
            .expect("reply");
        assert_eq!(reply.status, 301);
        assert_eq!(reply.header("location"), "https://www.a.test:8443/x/y?z=1");
        let post = l7_support::client::request("POST", "a.test", "/form", "data");
        assert_eq!(c.send(post).await.expect("reply").status, 301);
        let mut c = H1::connect(to_443).await.expect("connect");
        let reply = c.send(get("a.test", "/")).await.expect("reply");
        assert_eq!(reply.header("location"), "https://a.test/");
    });
    lab.stop();
}
