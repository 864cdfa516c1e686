//! gRPC through Sluice as a gRPC client (tonic) sees it: the proxy's own failures arrive as
//! gRPC statuses, not as HTTP errors or stream resets. Each case is compared with calling the
//! backend directly where that means something. The backends speak HTTP/2 directly
//! (`sluice_tests::grpc_backend`), so a test can hold an answer or kill a stream mid-way; the
//! client is tonic with a bytes codec (no generated code).

mod l7_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use l7_support::{Lab, local};
use sluice_tests::grpc_backend::GrpcBackend;
use sluice_tests::privileged;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};

/// Messages as they are: the tests look at statuses, not at protobuf.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// A call's options: metadata the backend reads, and the client's deadline.
#[derive(Default, Clone, Copy)]
struct Call {
    delay_ms: u64,
    count: u64,
    interval_ms: u64,
    deadline: Option<Duration>,
}

/// How a call ended: the messages received, then its status, and how long it took.
#[derive(Debug)]
struct Outcome {
    messages: usize,
    code: Code,
    message: String,
    took: Duration,
}

/// Calls `method` on `addr` (a unary call for `Unary`, a server stream otherwise).
async fn call(addr: SocketAddr, method: &'static str, options: Call) -> Outcome {
    let started = Instant::now();
    let done = |messages, status: Status| Outcome {
        messages,
        code: status.code(),
        message: status.message().to_owned(),
        took: started.elapsed(),
    };
    let channel = match tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map(|e| e.connect_timeout(Duration::from_secs(2)))
    {
        Ok(endpoint) => match endpoint.connect().await {
            Ok(channel) => channel,
            Err(e) => return done(0, Status::unavailable(format!("connect: {e}"))),
        },
        Err(e) => return done(0, Status::internal(e.to_string())),
    };
    let mut client = tonic::client::Grpc::new(channel);
    if let Err(e) = client.ready().await {
        return done(0, Status::unavailable(format!("not ready: {e}")));
    }
    let mut request = tonic::Request::new(Bytes::from_static(b"ping"));
    let metadata = request.metadata_mut();
    for (name, value) in [
        ("x-delay-ms", options.delay_ms),
        ("x-count", options.count),
        ("x-interval-ms", options.interval_ms),
    ] {
        metadata.insert(name, value.into());
    }
    if let Some(deadline) = options.deadline {
        request.set_timeout(deadline);
    }
    let path = PathAndQuery::from_static(method);
    if method.ends_with("/Unary") {
        return match client.unary(request, path, RawCodec).await {
            Ok(_) => done(1, Status::ok("")),
            Err(status) => done(0, status),
        };
    }
    let mut stream = match client.server_streaming(request, path, RawCodec).await {
        Ok(response) => response.into_inner(),
        Err(status) => return done(0, status),
    };
    let mut messages = 0;
    loop {
        match stream.message().await {
            Ok(Some(_)) => messages += 1,
            Ok(None) => return done(messages, Status::ok("")),
            Err(status) => return done(messages, status),
        }
    }
}

/// A pool `name` speaking h2c to `backends`, health checks off.
fn pool(name: &str, backends: &[SocketAddr]) -> String {
    let mut toml = format!(
        "[[pool]]\nname = \"{name}\"\nupstream_protocol = \"http2\"\n[pool.health_check]\nkind = \"none\"\n"
    );
    for addr in backends {
        toml += &format!(
            "[[pool.backend]]\naddress = \"{}\"\nport = {}\n",
            addr.ip(),
            addr.port()
        );
    }
    toml
}

/// An l7 service on `listen` whose one route forwards everything to `pool` with the route
/// settings `route` (and the service's filters `filters`, as TOML tables).
fn service(name: &str, listen: SocketAddr, pool: &str, route: &str, filters: &str) -> String {
    format!(
        "[[service]]\nname = \"{name}\"\nvip = \"{}\"\nport = {}\nprotocol = \"tcp\"\n[service.l7]\n{filters}\
         [[service.l7.virtual_host]]\nname = \"all\"\ndomains = [\"*\"]\n\
         [[service.l7.virtual_host.route]]\nmatch = {{ path_prefix = \"/\" }}\nforward = {{ pool = \"{pool}\" }}\n{route}\n",
        listen.ip(),
        listen.port()
    )
}

const UNARY: &str = "/test.Echo/Unary";
const STREAM: &str = "/test.Echo/Stream";
const DIE: &str = "/test.Echo/Die";

#[test]
fn sluice_speaks_grpc_when_things_go_wrong() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    let backend = GrpcBackend::start(&lab.ns, local(9001));
    let dead = local(9009);
    let (bounded, unbounded, limited, down) = (local(8080), local(8081), local(8082), local(8083));
    let (narrow, unrouted) = (local(8084), local(8085));
    let (unauthenticated, forbidden) = (local(8086), local(8087));
    let config = [
        pool("grpc", &[backend.addr]),
        pool("dead", &[dead]),
        service("bounded", bounded, "grpc", "timeout = \"1s\"", ""),
        service(
            "unbounded",
            unbounded,
            "grpc",
            "timeout = \"0s\"\nstream_idle_timeout = \"1s\"",
            "",
        ),
        service(
            "limited",
            limited,
            "grpc",
            "",
            "[[service.l7.filter]]\nname = \"one\"\nrate_limit = { rate = 1, per = \"1m\", burst = 1, key = \"global\" }\n",
        ),
        service("down", down, "dead", "", ""),
        // One call at a time: a second one meets the circuit breaker.
        pool("narrow", &[backend.addr]).replace(
            "[pool.health_check]",
            "[pool.circuit_breakers]\nmax_requests = 1\n[pool.health_check]",
        ),
        service("narrow", narrow, "narrow", "", ""),
        // A JWT filter the call carries no token for (its key set is never fetched: a
        // missing token is refused before keys matter).
        service(
            "unauthenticated",
            unauthenticated,
            "grpc",
            "",
            "[[service.l7.filter]]\nname = \"users\"\njwt = { jwks_url = \"http://127.0.0.1:9/jwks.json\" }\n",
        ),
        // An authz filter that denies every call.
        service(
            "forbidden",
            forbidden,
            "grpc",
            "",
            "[[service.l7.filter]]\nname = \"nobody\"\nauthz = { default = \"deny\" }\n",
        ),
        // Routes for another service only: the test's methods have no route.
        service("unrouted", unrouted, "grpc", "", "")
            .replace("path_prefix = \"/\"", "path_prefix = \"/other.Service/\""),
    ]
    .concat();
    lab.start(&config);
    let log = || lab.log();

    // A working call, for a baseline: through Sluice as directly.
    let direct = lab.run(call(backend.addr, UNARY, Call::default()));
    let proxied = lab.run(call(bounded, UNARY, Call::default()));
    assert_eq!(
        (direct.code, proxied.code),
        (Code::Ok, Code::Ok),
        "{direct:?} {proxied:?}; log:\n{}",
        log()
    );

    // Backend down: UNAVAILABLE (directly, the client's own connect failure says the same).
    let direct = lab.run(call(dead, UNARY, Call::default()));
    let proxied = lab.run(call(down, UNARY, Call::default()));
    assert_eq!(direct.code, Code::Unavailable, "{direct:?}");
    assert_eq!(proxied.code, Code::Unavailable, "{proxied:?}");
    assert!(proxied.message.contains("cannot connect"), "{proxied:?}");

    // A slow unary call with a client deadline: Sluice ends it at the deadline. The backend
    // does not enforce deadlines, so directly the call simply takes its 2 s.
    let slow = Call {
        delay_ms: 2000,
        deadline: Some(Duration::from_millis(300)),
        ..Call::default()
    };
    let direct = lab.run(call(backend.addr, UNARY, slow));
    let proxied = lab.run(call(bounded, UNARY, slow));
    assert_eq!(direct.code, Code::Ok, "{direct:?}");
    assert_eq!(proxied.code, Code::DeadlineExceeded, "{proxied:?}");
    assert!(proxied.took < Duration::from_millis(1500), "{proxied:?}");
    // The route timeout caps a longer client deadline, and ends the call the same way.
    let capped = Call {
        delay_ms: 3000,
        deadline: Some(Duration::from_secs(10)),
        ..Call::default()
    };
    let proxied = lab.run(call(bounded, UNARY, capped));
    assert_eq!(proxied.code, Code::DeadlineExceeded, "{proxied:?}");
    assert!(proxied.took < Duration::from_millis(2500), "{proxied:?}");

    // A 3 s server stream: cut at the 1 s route timeout with DEADLINE_EXCEEDED after the
    // messages sent so far; whole through a route whose timeout is off.
    let long = Call {
        count: 6,
        interval_ms: 500,
        ..Call::default()
    };
    let cut = lab.run(call(bounded, STREAM, long));
    assert_eq!(cut.code, Code::DeadlineExceeded, "{cut:?}");
    assert!((1..6).contains(&cut.messages), "{cut:?}");
    let whole = lab.run(call(unbounded, STREAM, long));
    assert_eq!(
        (whole.code, whole.messages),
        (Code::Ok, 6),
        "{whole:?}; log:\n{}",
        log()
    );
    assert!(whole.took >= Duration::from_millis(2900), "{whole:?}");
    // ...where a stream silent for longer than stream_idle_timeout is ended.
    let silent = Call {
        count: 2,
        interval_ms: 1500,
        ..Call::default()
    };
    let idle = lab.run(call(unbounded, STREAM, silent));
    assert_eq!(
        (idle.code, idle.messages),
        (Code::DeadlineExceeded, 0),
        "{idle:?}"
    );

    // A filter's 429: RESOURCE_EXHAUSTED (the one-request bucket is spent by the first).
    let first = lab.run(call(limited, UNARY, Call::default()));
    let second = lab.run(call(limited, UNARY, Call::default()));
    assert_eq!(first.code, Code::Ok, "{first:?}");
    assert_eq!(second.code, Code::ResourceExhausted, "{second:?}");

    // A filter's 401 and 403: UNAUTHENTICATED and PERMISSION_DENIED.
    let refused = lab.run(call(unauthenticated, UNARY, Call::default()));
    assert_eq!(refused.code, Code::Unauthenticated, "{refused:?}");
    let refused = lab.run(call(forbidden, UNARY, Call::default()));
    assert_eq!(refused.code, Code::PermissionDenied, "{refused:?}");

    // A circuit breaker open: UNAVAILABLE, while the call holding the pool's one slot ends OK.
    let (held, refused) = lab.run(async move {
        let slow = Call {
            delay_ms: 1000,
            ..Call::default()
        };
        let held = tokio::spawn(call(narrow, UNARY, slow));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let refused = call(narrow, UNARY, Call::default()).await;
        (held.await.map(|o| o.code).ok(), refused)
    });
    assert_eq!(held, Some(Code::Ok));
    assert_eq!(refused.code, Code::Unavailable, "{refused:?}");
    assert!(refused.message.contains("circuit breaker"), "{refused:?}");

    // No route for the method: UNIMPLEMENTED, with Sluice's own message.
    let unrouted = lab.run(call(unrouted, UNARY, Call::default()));
    assert_eq!(unrouted.code, Code::Unimplemented, "{unrouted:?}");
    assert!(unrouted.message.contains("no route"), "{unrouted:?}");

    // The backend dies mid-stream: the client gets the message sent, then UNAVAILABLE,
    // which its retry policy understands.
    let direct = lab.run(call(backend.addr, DIE, Call::default()));
    let proxied = lab.run(call(bounded, DIE, Call::default()));
    eprintln!("backend killed mid-stream: directly {direct:?}; through sluice {proxied:?}");
    assert_eq!(
        (proxied.code, proxied.messages),
        (Code::Unavailable, 1),
        "{proxied:?}; log:\n{}",
        log()
    );
    lab.stop();
}

#[test]
fn a_grpc_health_probe_takes_a_not_serving_backend_out() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    let (one, two) = (
        GrpcBackend::start(&lab.ns, local(9001)),
        GrpcBackend::start(&lab.ns, local(9002)),
    );
    let listen = local(8080);
    let mut config = "[[pool]]\nname = \"grpc\"\nupstream_protocol = \"http2\"\npanic_threshold = 0\n\
        [pool.health_check]\nkind = \"grpc\"\nservice = \"test.Echo\"\ninterval = \"200ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 1\njitter = 0\n"
        .to_owned();
    for addr in [one.addr, two.addr] {
        config += &format!(
            "[[pool.backend]]\naddress = \"{}\"\nport = {}\n",
            addr.ip(),
            addr.port()
        );
    }
    config += &service("web", listen, "grpc", "", "");
    lab.start(&config);
    let healthy =
        |lab: &Lab, backend: &GrpcBackend| lab.backend_healthy("grpc", &backend.addr.to_string());
    let wait_for = |lab: &Lab, backend: &GrpcBackend, want: bool| {
        let start = Instant::now();
        while healthy(lab, backend) != Some(want) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{} never became healthy={want}; log:\n{}",
                backend.addr,
                lab.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for(&lab, &one, true);
    wait_for(&lab, &two, true);

    // NOT_SERVING: unhealthy within a few probes, and no more calls reach it.
    two.set_serving(false);
    wait_for(&lab, &two, false);
    let before = two.calls();
    for _ in 0..20 {
        let outcome = lab.run(call(listen, UNARY, Call::default()));
        assert_eq!(outcome.code, Code::Ok, "{outcome:?}");
    }
    assert_eq!(two.calls(), before, "a NOT_SERVING backend still got calls");
    assert!(
        healthy(&lab, &one) == Some(true),
        "the serving backend went down too"
    );

    // SERVING again: back in.
    two.set_serving(true);
    wait_for(&lab, &two, true);
    lab.stop();
}
