//! Kept-alive backend connections against a real HTTP/1.1 server on 127.0.0.1 that counts
//! the connections it accepts and holds open.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::*;

/// Counts of what the backend saw.
#[derive(Default)]
struct Counts {
    accepted: AtomicUsize,
    open: AtomicUsize,
    /// Answer with `connection: close` (the backend ends every connection after a response).
    close_each: AtomicBool,
}

async fn backend() -> (SocketAddr, Arc<Counts>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding");
    let address = listener.local_addr().expect("bound address");
    let counts = Arc::new(Counts::default());
    let shared = counts.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            shared.accepted.fetch_add(1, SeqCst);
            shared.open.fetch_add(1, SeqCst);
            let counts = shared.clone();
            tokio::spawn(async move {
                let service = service_fn(|_request: Request<hyper::body::Incoming>| {
                    let close = counts.close_each.load(SeqCst);
                    async move {
                        let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
                        if close {
                            response.headers_mut().insert(
                                http::header::CONNECTION,
                                http::HeaderValue::from_static("close"),
                            );
                        }
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                counts.open.fetch_sub(1, SeqCst);
            });
        }
    });
    (address, counts)
}

fn http1() -> ConnectSettings {
    ConnectSettings {
        protocol: UpstreamProtocol::Http1,
        connect_timeout: Duration::from_secs(2),
        max_connections: 1024,
    }
}

/// No wait for a connection is ever needed in these tests but the limit's own.
fn no_queue() -> PendingLimit<'static> {
    static WAITING: AtomicUsize = AtomicUsize::new(0);
    PendingLimit {
        waiting: &WAITING,
        max: 1024,
    }
}

fn get(address: SocketAddr) -> Request<RequestBody> {
    let mut request = Request::new(RequestBody::empty());
    *request.uri_mut() = Uri::from_static("/");
    if let Ok(host) = http::HeaderValue::from_str(&address.to_string()) {
        request.headers_mut().insert(http::header::HOST, host);
    }
    request
}

/// One request, its body read to the end, the connection given back as the proxy does.
async fn exchange(connections: &Arc<BackendConnections>, address: SocketAddr) -> String {
    let Exchange { response, checkin } = connections
        .send(get(address), no_queue())
        .await
        .unwrap_or_else(|e| panic!("request failed: {e:?}"));
    let body = response
        .into_body()
        .collect()
        .await
        .expect("reading the body")
        .to_bytes();
    if let Some(checkin) = checkin {
        checkin.give_back();
    }
    String::from_utf8_lossy(&body).into_owned()
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what} did not happen within 2 s");
}

#[tokio::test]
async fn sequential_requests_share_one_connection() {
    let (address, counts) = backend().await;
    let registry = ConnectionRegistry::start();
    let connections = registry.get(address, http1());
    for _ in 0..20 {
        assert_eq!(exchange(&connections, address).await, "ok");
    }
    assert_eq!(counts.accepted.load(SeqCst), 1, "one kept-alive connection");
    assert_eq!(connections.idle_count(), 1);
}

#[tokio::test]
async fn concurrent_requests_open_one_connection_each_then_reuse_them() {
    let (address, counts) = backend().await;
    let registry = ConnectionRegistry::start();
    let connections = registry.get(address, http1());
    for _ in 0..3 {
        let batch: Vec<_> = (0..4)
            .map(|_| {
                let connections = connections.clone();
                tokio::spawn(async move { exchange(&connections, address).await })
            })
            .collect();
        for request in batch {
            assert_eq!(request.await.expect("request task"), "ok");
        }
    }
    let accepted = counts.accepted.load(SeqCst);
    assert!(
        (1..=4).contains(&accepted),
        "{accepted} connections for 12 requests, 4 at a time"
    );
}

#[tokio::test]
async fn a_connection_the_backend_closes_is_replaced_without_an_error() {
    let (address, counts) = backend().await;
    counts.close_each.store(true, SeqCst);
    let registry = ConnectionRegistry::start();
    let connections = registry.get(address, http1());
    for _ in 0..10 {
        assert_eq!(exchange(&connections, address).await, "ok");
    }
    assert_eq!(
        counts.accepted.load(SeqCst),
        10,
        "one connection per request"
    );
}

#[tokio::test]
async fn pools_reaching_a_backend_the_same_way_share_its_connections() {
    let (address, counts) = backend().await;
    let registry = ConnectionRegistry::start();
    let first = registry.get(address, http1());
    assert_eq!(exchange(&first, address).await, "ok");
    let second = registry.get(address, http1());
    assert!(Arc::ptr_eq(&first, &second));
    assert_eq!(exchange(&second, address).await, "ok");
    assert_eq!(counts.accepted.load(SeqCst), 1);

    let other = ConnectSettings {
        connect_timeout: Duration::from_secs(3),
        ..http1()
    };
    assert!(!Arc::ptr_eq(&first, &registry.get(address, other)));
}

#[tokio::test]
async fn idle_connections_close_when_the_last_pool_lets_the_backend_go() {
    let (address, counts) = backend().await;
    let registry = ConnectionRegistry::start();
    let connections = registry.get(address, http1());
    assert_eq!(exchange(&connections, address).await, "ok");
    eventually("the connection opening", || counts.open.load(SeqCst) == 1).await;
    drop(connections);
    eventually("the idle connection closing", || {
        counts.open.load(SeqCst) == 0
    })
    .await;
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error() {
    let address = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding");
        listener.local_addr().expect("bound address")
    };
    let registry = ConnectionRegistry::start();
    let connections = registry.get(address, http1());
    match connections.send(get(address), no_queue()).await {
        Err(err) => assert!(err.is_connect(), "{err:?}"),
        Ok(_) => panic!("a closed port answered"),
    }
}
