//! One case per validation rule: a small file and the errors it must give, with locations.
//! Each case expects an exact list of errors, so a rule that stops firing fails its case.

use super::errors;

/// An l7 service whose only route is `route`, which starts on line 14.
pub(crate) fn l7_route(route: &str) -> String {
    l7_service(
        "",
        &format!(
            "[[service.l7.virtual_host]]\nname = \"v\"\ndomains = [\"*\"]\n[[service.l7.virtual_host.route]]\n{route}"
        ),
    )
}

/// Pool "p" (one backend, 10.0.0.1:80) and service "s" (192.0.2.1:80/tcp): `l7` goes on
/// line 10, right after `[service.l7]`; `rest` follows it.
pub(crate) fn l7_service(l7: &str, rest: &str) -> String {
    format!(
        "[[pool]]\nname = \"p\"\nbackend = [{{ address = \"10.0.0.1\", port = 80 }}]\n[[service]]\nname = \"s\"\nvip = \"192.0.2.1\"\nport = 80\nprotocol = \"tcp\"\n[service.l7]\n{l7}{rest}"
    )
}

/// A virtual host with a catch-all route to pool "p", for `l7_service`.
pub(crate) const VHOST: &str = "[[service.l7.virtual_host]]\nname = \"v\"\ndomains = [\"*\"]\n[[service.l7.virtual_host.route]]\nmatch = { path_prefix = \"/\" }\nforward = { pool = \"p\" }\n";

/// Pool "p" with `fields` starting on line 3, then one backend (10.0.0.1:80).
pub(crate) fn pool(fields: &str) -> String {
    format!(
        "[[pool]]\nname = \"p\"\n{fields}\n[[pool.backend]]\naddress = \"10.0.0.1\"\nport = 80\n"
    )
}

/// Interface eth0, pool "p" (backend 10.0.0.1:`port`), then `service` starting on line 5.
fn l4(port: u16, service: &str) -> String {
    format!(
        "[[interface]]\nname = \"eth0\"\n[[pool]]\nname = \"p\"\nbackend = [{{ address = \"10.0.0.1\", port = {port} }}]\n{service}"
    )
}

/// An l4 service "s" on 192.0.2.1:80/tcp with `l4` table lines after `[service.l4]`.
fn l4_service(l4_lines: &str) -> String {
    l4(
        80,
        &format!(
            "[[service]]\nname = \"s\"\nvip = \"192.0.2.1\"\nport = 80\nprotocol = \"tcp\"\n[service.l4]\n{l4_lines}"
        ),
    )
}

fn cases() -> Vec<(&'static str, String, Vec<&'static str>)> {
    let cert = |fields: &str| {
        format!(
            "[[certificate]]\nname = \"c\"\ncert = \"certs/example.crt\"\nkey = \"certs/example.key\"\n{fields}"
        )
    };
    vec![
        // [[interface]]
        ("interface name too long", "[[interface]]\nname = \"abcdefghijklmnop\"\n".into(),
            vec!["2:8: not a Linux interface name"]),
        ("interface name unique", "[[interface]]\nname = \"eth0\"\n[[interface]]\nname = \"eth0\"\n".into(),
            vec!["4:8: interface \"eth0\": the name is already used by the interface on line 2"]),
        ("xdp_mode is an enum", "[[interface]]\nname = \"eth0\"\nxdp_mode = \"turbo\"\n".into(),
            vec!["3:12: interface \"eth0\": unknown variant `turbo`"]),
        // [admin]
        ("admin listen is a socket address", "[admin]\nlisten = \"localhost\"\n".into(),
            vec!["2:10: admin: listen \"localhost\" is not a socket address"]),
        ("admin token_file required off loopback", "[admin]\nlisten = \"0.0.0.0:9100\"\n".into(),
            vec!["2:10: admin: listen 0.0.0.0:9100 is not a loopback address, so token_file is required"]),
        ("admin token_file exists", "[admin]\nlisten = \"[::]:9100\"\ntoken_file = \"nope.token\"\n".into(),
            vec!["3:14: admin: token_file"]),
        ("admin metrics_path starts with /", "[admin]\nmetrics_path = \"metrics\"\n".into(),
            vec!["2:16: admin: metrics_path \"metrics\" must start with '/'"]),
        // [[certificate]]
        ("certificate names unique", format!("{}{}", cert(""), cert("")),
            vec!["6:8: certificate \"c\": the name is already used by the certificate on line 2"]),
        ("certificate file exists", "[[certificate]]\nname = \"c\"\ncert = \"certs/missing.crt\"\nkey = \"certs/example.key\"\n".into(),
            vec!["3:8: certificate \"c\": cert "]),
        ("certificate file is PEM", "[[certificate]]\nname = \"c\"\ncert = \"example.toml\"\nkey = \"certs/example.key\"\n".into(),
            vec!["3:8: holds no PEM CERTIFICATE block"]),
        ("key file is a PEM key", "[[certificate]]\nname = \"c\"\ncert = \"certs/example.crt\"\nkey = \"certs/example.crt\"\n".into(),
            vec!["4:7: holds no PEM private key block"]),
        ("server names are host names", cert("server_names = [\"*\", \"a b.com\", \"*.ok.com\"]\n"),
            vec!["5:17: \"*\" is not a host name", "5:22: \"a b.com\" is not a host name"]),
        // [[pool]]
        ("pool names unique", format!("{}{}", pool(""), pool("")),
            vec!["8:8: pool \"p\": the name is already used by the pool on line 2"]),
        ("pool policy is an enum", pool("policy = \"fastest\""),
            vec!["3:10: pool \"p\": unknown variant `fastest`"]),
        ("hash_on only for maglev", pool("hash_on = \"client_address\""),
            vec!["3:11: pool \"p\": hash_on only applies to policy \"maglev\""]),
        ("hash_on header is a token", pool("policy = \"maglev\"\nhash_on = { header = \"x user\" }"),
            vec!["4:22: pool \"p\": header name \"x user\" is not a valid HTTP token"]),
        ("stream_idle_timeout only on forward routes", l7_route("match = { path_prefix = \"/\" }\ndirect_response = { status = 200 }\nstream_idle_timeout = \"1s\""),
            vec!["16:23: service \"s\", virtual host \"v\", route #1: stream_idle_timeout only applies to forward routes"]),
        ("health_check.service only for grpc", pool("health_check = { kind = \"tcp\", service = \"a.B\" }"),
            vec!["3:42: pool \"p\": health_check.service only applies to kind \"grpc\""]),
        ("health_check.service is a name", pool("health_check = { kind = \"grpc\", service = \"a B\" }"),
            vec!["3:43: pool \"p\": health_check.service must be a gRPC service name"]),
        ("slow_start is a duration", pool("slow_start = \"soon\""),
            vec!["3:14: pool \"p\": slow_start \"soon\" is not a duration"]),
        ("slow_start cannot ramp maglev", pool("policy = \"maglev\"\nslow_start = \"30s\""),
            vec!["4:14: pool \"p\": slow_start cannot ramp a maglev pool"]),
        ("slow_start is l7 only", l4_service("mode = \"nat\"\npool = \"p\"").replace("name = \"p\"\n", "name = \"p\"\nslow_start = \"30s\"\n"),
            vec!["5:14: pool \"p\": slow_start is l7 only: service \"s\" uses this pool at l4"]),
        ("maglev needs hash_on for l7", l7_service("", VHOST).replace("name = \"p\"\n", "name = \"p\"\npolicy = \"maglev\"\n"),
            vec!["3:10: pool \"p\": policy \"maglev\" needs hash_on"]),
        ("connect_timeout is positive", pool("connect_timeout = \"0s\""),
            vec!["3:19: pool \"p\": connect_timeout must be longer than zero"]),
        ("panic_threshold range", pool("panic_threshold = -1"),
            vec!["3:19: pool \"p\": panic_threshold -1 is out of range (0..=100)"]),
        ("health timeout below interval", pool("[pool.health_check]\ninterval = \"1s\"\ntimeout = \"1s\""),
            vec!["5:11: health_check.timeout (1s) must be shorter than health_check.interval (1s)"]),
        ("health rise, fall, jitter ranges", pool("health_check = { rise = 0, fall = 101, jitter = 51 }"),
            vec!["3:25: health_check.rise 0 is out of range (1..=100)",
                 "3:35: health_check.fall 101 is out of range (1..=100)",
                 "3:49: health_check.jitter 51 is out of range (0..=50)"]),
        ("http fields only on http checks", pool("health_check = { method = \"GET\" }"),
            vec!["3:27: health_check.method only applies to kind \"http\", not \"tcp\""]),
        ("no http fields on kind none", pool("health_check = { kind = \"none\", expected_status = [200] }"),
            vec!["3:51: health_check.expected_status only applies to kind \"http\", not \"none\""]),
        ("http check path starts with /", pool("health_check = { kind = \"http\", path = \"healthz\" }"),
            vec!["3:40: health_check.path \"healthz\" must start with '/'"]),
        ("expected_status codes and ranges", pool("health_check = { kind = \"http\", expected_status = [\"600\", \"399-200\", 99, \"2xx\"] }"),
            vec!["3:52: \"600\" is not a status code", "3:59: \"399-200\"", "3:70: 99 is not", "3:74: \"2xx\""]),
        ("expected_status not empty", pool("health_check = { kind = \"http\", expected_status = [] }"),
            vec!["3:51: health_check.expected_status must not be empty"]),
        ("outlier detection ranges", pool("outlier_detection = { consecutive_failures = 0, max_ejected_percent = 101 }"),
            vec!["3:46: outlier_detection.consecutive_failures 0 is out of range (1..=1000)",
                 "3:71: outlier_detection.max_ejected_percent 101 is out of range (0..=100)"]),
        ("outlier max_ejection at least base", pool("outlier_detection = { base_ejection = \"1m\", max_ejection = \"30s\" }"),
            vec!["3:60: max_ejection must not be shorter than outlier_detection.base_ejection"]),
        ("pool has a backend", "[[pool]]\nname = \"p\"\n".into(),
            vec!["1:1: pool \"p\": a pool needs at least one [[pool.backend]] or a [pool.discovery]"]),
        ("backend address, port, weight", "[[pool]]\nname = \"p\"\nbackend = [{ address = \"10.0.0.256\", port = 0, weight = 10001 }]\n".into(),
            vec!["3:24: backend \"10.0.0.256:0\": address \"10.0.0.256\" is not an IP address",
                 "3:45: port 0 is out of range (1..=65535)",
                 "3:57: weight 10001 is out of range (1..=10000)"]),
        ("backend names and addresses unique", "[[pool]]\nname = \"p\"\nbackend = [\n  { address = \"10.0.0.1\", port = 80, name = \"a\" },\n  { address = \"10.0.0.2\", port = 80, name = \"a\" },\n  { address = \"10.0.0.1\", port = 80 },\n]\n".into(),
            vec!["5:45: pool \"p\", backend \"a\": the name is already used by the backend on line 4",
                 "6:15: pool \"p\", backend \"10.0.0.1:80\": 10.0.0.1:80 is already a backend on line 4"]),
        ("dsr backend port equals service port", l4(8080, "[[service]]\nname = \"s\"\nvip = \"192.0.2.1\"\nport = 80\nprotocol = \"tcp\"\nl4 = { mode = \"dsr\", pool = \"p\" }\n"),
            vec!["5:43: pool \"p\": backend port 8080 differs from port 80 of dsr service \"s\""]),
        // [[service]]
        ("service names unique", format!("{}[[service]]\nname = \"s\"\nvip = \"192.0.2.2\"\nport = 80\nprotocol = \"tcp\"\nl4 = {{ mode = \"nat\", pool = \"p\" }}\n", l4_service("mode = \"nat\"\npool = \"p\"\n")),
            vec!["15:8: service \"s\": the name is already used by the service on line 7"]),
        ("service vip and port", l4(80, "[[service]]\nname = \"s\"\nvip = \"192.0.2\"\nport = 65536\nprotocol = \"tcp\"\nl4 = { mode = \"nat\", pool = \"p\" }\n"),
            vec!["8:7: service \"s\": vip \"192.0.2\" is not an IP address", "9:8: port 65536 is out of range (1..=65535)"]),
        ("service protocol is an enum", l4(80, "[[service]]\nname = \"s\"\nvip = \"192.0.2.1\"\nport = 80\nprotocol = \"sctp\"\n"),
            vec!["10:12: service \"s\": unknown variant `sctp`, expected `tcp` or `udp`"]),
        ("service is l4 or l7, not both", format!("{}\n[service.l7]\nredirect_to_https = 443\n", l4_service("mode = \"nat\"\npool = \"p\"")),
            vec!["14:1: service \"s\": a service has either [service.l4] or [service.l7], not both"]),
        ("service is l4 or l7", l4(80, "[[service]]\nname = \"s\"\nvip = \"192.0.2.1\"\nport = 80\nprotocol = \"tcp\"\n"),
            vec!["6:1: service \"s\": a service needs [service.l4] or [service.l7]"]),
        ("vip, port, protocol unique", format!("{}[[service]]\nname = \"t\"\nvip = \"192.0.2.1\"\nport = 80\nprotocol = \"tcp\"\nl4 = {{ mode = \"nat\", pool = \"p\" }}\n", l4_service("mode = \"nat\"\npool = \"p\"\n")),
            vec!["16:7: service \"t\": 192.0.2.1:80/tcp is already used by service \"s\" on line 8"]),
        ("l4 pool exists", l4_service("mode = \"nat\"\npool = \"q\"\n"),
            vec!["13:8: service \"s\": pool \"q\" is not defined"]),
        ("l4 mode required", l4_service("pool = \"p\"\n"),
            vec!["11:1: service \"s\": missing field `mode`"]),
        ("maglev table size prime", l4_service("mode = \"nat\"\npool = \"p\"\nmaglev_table_size = 65536\n"),
            vec!["14:21: maglev_table_size 65536 is not a prime number"]),
        ("maglev table size range", l4_service("mode = \"nat\"\npool = \"p\"\nmaglev_table_size = 131101\n"),
            vec!["14:21: maglev_table_size 131101 is out of range (251..=131071)"]),
        ("maglev seed is u32", l4_service("mode = \"nat\"\npool = \"p\"\nmaglev_seed = 4294967296\n"),
            vec!["14:15: maglev_seed 4294967296 is out of range (0..=4294967295)"]),
        ("l4 needs an interface", "[[pool]]\nname = \"p\"\nbackend = [{ address = \"10.0.0.1\", port = 80 }]\n[[service]]\nname = \"s\"\nvip = \"192.0.2.1\"\nport = 80\nprotocol = \"tcp\"\nl4 = { mode = \"nat\", pool = \"p\" }\n".into(),
            vec!["9:6: l4 services need at least one [[interface]]"]),
        ("no mode on l7", l7_service("mode = \"dsr\"\n", VHOST),
            vec!["10:1: service \"s\": unknown field `mode`"]),
        ("l7 needs tcp", l7_service("", VHOST).replace("\"tcp\"", "\"udp\""),
            vec!["8:12: service \"s\": an l7 service needs protocol \"tcp\""]),
        // [service.l7]
        ("tls certificates exist, once, at least one", format!("{}{}", cert(""), l7_service("tls = { certificates = [\"c\", \"x\", \"c\"] }\n", VHOST)).replace("[[pool]]", "[[pool]]"),
            vec!["14:30: service \"s\": certificate \"x\" is not defined", "14:35: certificate \"c\" is listed twice"]),
        ("tls needs a certificate", l7_service("tls = { certificates = [] }\n", VHOST),
            vec!["10:24: tls.certificates needs at least one certificate"]),
        ("alpn values", l7_service("tls = { certificates = [], alpn = [\"h3\"] }\n", VHOST),
            vec!["10:36: unknown variant `h3`, expected `h2` or `http/1.1`"]),
        ("alpn unique", format!("{}{}", cert(""), l7_service("tls = { certificates = [\"c\"], alpn = [\"h2\", \"h2\"] }\n", VHOST)),
            vec!["14:38: tls.alpn must list"]),
        ("min_version values", l7_service("tls = { certificates = [\"c\"], min_version = \"1.1\" }\n", VHOST),
            vec!["10:45: unknown variant `1.1`, expected `1.2` or `1.3`"]),
        ("h2c only on plain listeners", format!("{}{}", cert(""), l7_service("h2c = true\ntls = { certificates = [\"c\"] }\n", VHOST)),
            vec!["15:7: h2c applies to plain-text listeners only"]),
        ("redirect_to_https only on plain listeners", format!("{}{}", cert(""), l7_service("redirect_to_https = 443\ntls = { certificates = [\"c\"] }\n", "")),
            vec!["15:7: redirect_to_https applies to plain-text listeners only"]),
        ("redirect_to_https takes no virtual hosts", l7_service("redirect_to_https = 443\n", VHOST),
            vec!["10:21: redirect_to_https redirects every request, so it takes no virtual hosts"]),
        ("redirect_to_https port range", l7_service("redirect_to_https = 0\n", ""),
            vec!["10:21: redirect_to_https 0 is out of range (1..=65535)"]),
        ("limits ranges", l7_service("limits = { max_request_header_bytes = 100, max_connections = 0, idle_timeout = \"x\", h2_max_concurrent_streams = 0 }\n", VHOST),
            vec!["10:39: limits.max_request_header_bytes 100 is out of range (1024..=1048576)",
                 "10:62: limits.max_connections 0 is out of range (1..=10000000)",
                 "10:80: limits.idle_timeout \"x\" is not a duration",
                 "10:113: limits.h2_max_concurrent_streams 0 is out of range (1..=10000)"]),
        ("l7 needs a virtual host", l7_service("access_log = false\n", ""),
            vec!["9:1: service \"s\": an l7 service needs at least one [[service.l7.virtual_host]]"]),
        ("virtual host names unique, domains unique", l7_service("", &format!("{VHOST}{}", VHOST.replace("[\"*\"]", "[\"a.com\", \"A.com\", \"*\"]"))),
            vec!["17:8: service \"s\", virtual host \"v\": the name is already used by the virtual host on line 11",
                 "18:21: domain \"A.com\" is already served by virtual host \"v\"",
                 "18:30: domain \"*\" is already served by virtual host \"v\""]),
        ("virtual host domains valid, not empty", l7_service("", &VHOST.replace("[\"*\"]", "[\"*.*.com\", \"-a.com\"]")),
            vec!["12:12: \"*.*.com\" is not a host name", "12:23: \"-a.com\" is not a host name"]),
        ("virtual host needs domains", l7_service("", &VHOST.replace("[\"*\"]", "[]")),
            vec!["12:11: domains needs at least one entry"]),
        ("virtual host needs routes", l7_service("", "[[service.l7.virtual_host]]\nname = \"v\"\ndomains = [\"*\"]\n"),
            vec!["10:1: service \"s\", virtual host \"v\": a virtual host needs at least one"]),
        // routes
        ("route needs a path match", l7_route("match = { methods = [\"GET\"] }\nforward = { pool = \"p\" }\n"),
            vec!["14:9: route #1: match needs exactly one of path_exact, path_prefix and path_regex"]),
        ("route takes one path match", l7_route("match = { path_exact = \"/a\", path_prefix = \"/\" }\nforward = { pool = \"p\" }\n"),
            vec!["14:44: match needs exactly one of"]),
        ("path regex compiles", l7_route("match = { path_regex = \"/(a\" }\nforward = { pool = \"p\" }\n"),
            vec!["14:24: invalid regex \"/(a\": unclosed group"]),
        ("path starts with /", l7_route("match = { path_exact = \"a\" }\nforward = { pool = \"p\" }\n"),
            vec!["14:24: path_exact \"a\" must start with '/'"]),
        ("methods are tokens", l7_route("match = { path_prefix = \"/\", methods = [\"GE T\"] }\nforward = { pool = \"p\" }\n"),
            vec!["14:41: method \"GE T\" is not a valid HTTP token"]),
        ("header condition needs exactly one test", l7_route("match = { path_prefix = \"/\", headers = [{ name = \"a\", present = true, exact = \"b\" }, { name = \"c\" }] }\nforward = { pool = \"p\" }\n"),
            vec!["14:41: condition on \"a\" needs exactly one of present, exact and regex", "14:86: condition on \"c\""]),
        ("query regex compiles", l7_route("match = { path_prefix = \"/\", query = [{ name = \"a\", regex = \"[\" }] }\nforward = { pool = \"p\" }\n"),
            vec!["14:61: invalid regex \"[\""]),
        ("route needs an action", l7_route("match = { path_prefix = \"/\" }\n"),
            vec!["13:1: route #1: a route needs exactly one of forward, redirect and direct_response"]),
        ("route takes one action", l7_route("match = { path_prefix = \"/\" }\nforward = { pool = \"p\" }\ndirect_response = { status = 200 }\n"),
            vec!["16:19: a route needs exactly one of forward, redirect and direct_response"]),
        ("forward pool exists", l7_route("match = { path_prefix = \"/\" }\nforward = { pool = \"q\" }\n"),
            vec!["15:20: route #1: pool \"q\" is not defined"]),
        ("forward takes pool or pools", l7_route("match = { path_prefix = \"/\" }\nforward = { pool = \"p\", pools = [] }\n"),
            vec!["15:11: forward needs exactly one of pool and pools"]),
        ("forward pools not empty", l7_route("match = { path_prefix = \"/\" }\nforward = { pools = [] }\n"),
            vec!["15:21: forward.pools needs at least one pool"]),
        ("forward pools weights and duplicates", l7_route("match = { path_prefix = \"/\" }\nforward = { pools = [{ pool = \"p\", weight = 0 }, { pool = \"p\", weight = 1 }] }\n"),
            vec!["15:45: weight 0 is out of range (1..=10000)", "15:59: pool \"p\" is listed twice"]),
        ("redirect status", l7_route("match = { path_prefix = \"/\" }\nredirect = { scheme = \"https\", status = 200 }\n"),
            vec!["15:41: redirect.status 200 is not one of 301, 302, 303, 307, 308"]),
        ("redirect changes something", l7_route("match = { path_prefix = \"/\" }\nredirect = { status = 301 }\n"),
            vec!["15:12: redirect needs at least one of scheme, host, port and path"]),
        ("redirect host, port, path", l7_route("match = { path_prefix = \"/\" }\nredirect = { host = \"a b\", port = 0, path = \"x\" }\n"),
            vec!["15:21: redirect.host \"a b\" is not a host name", "15:35: redirect.port 0 is out of range", "15:45: redirect.path \"x\" must start with '/'"]),
        ("direct response status", l7_route("match = { path_prefix = \"/\" }\ndirect_response = { status = 101 }\n"),
            vec!["15:30: direct_response.status 101 is out of range (200..=599)"]),
        ("prefix_rewrite needs path_prefix and forward", l7_route("match = { path_exact = \"/\" }\ndirect_response = { status = 200 }\nprefix_rewrite = \"/b\"\n"),
            vec!["16:18: prefix_rewrite needs a path_prefix match", "16:18: prefix_rewrite only applies to forward routes"]),
        ("header names and values", l7_route("match = { path_prefix = \"/\" }\nforward = { pool = \"p\" }\nrequest_headers_add = { \"a b\" = \"x\", ok = \"line\\nbreak\" }\nresponse_headers_remove = [\"c:d\"]\n"),
            vec!["16:25: header name \"a b\" is not a valid HTTP token", "16:43: header value \"line\\nbreak\" contains control characters", "17:28: header name \"c:d\""]),
        ("route timeout is a duration or 0s", l7_route("match = { path_prefix = \"/\" }\nforward = { pool = \"p\" }\ntimeout = \"never\"\n"),
            vec!["16:11: service \"s\", virtual host \"v\", route #1: timeout \"never\" is not a duration"]),
        ("retry settings", l7_route("match = { path_prefix = \"/\" }\nforward = { pool = \"p\" }\ntimeout = \"2s\"\nretry = { on = [\"404\"], attempts = 11, per_try_timeout = \"3s\", budget_percent = 101 }\n"),
            vec!["17:17: retry.on \"404\" is not", "17:36: retry.attempts 11 is out of range (0..=10)", "17:58: retry.per_try_timeout must not be longer than the route timeout", "17:81: retry.budget_percent 101 is out of range (0..=100)"]),
        ("retry only on forward routes", l7_route("match = { path_prefix = \"/\" }\ndirect_response = { status = 200 }\nretry = { attempts = 1 }\n"),
            vec!["16:9: retry only applies to forward routes"]),
    ]
}

#[test]
fn every_rule_reports_its_error_at_its_place() {
    let mut failures = Vec::new();
    for (name, text, expected) in cases() {
        let actual = errors(&text);
        let matches = actual.len() == expected.len()
            && actual.iter().zip(&expected).all(|(a, e)| {
                let (position, fragment) = e.split_once(' ').unwrap_or((e, ""));
                a.starts_with(position) && a.contains(fragment)
            });
        if !matches {
            let shown: Vec<_> = actual.iter().map(|a| show(&text, a)).collect();
            failures.push(format!(
                "{name}:\n  expected {expected:#?}\n  got:\n{}",
                shown.join("\n")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// An error under the line it points at, with a caret at its column.
fn show(text: &str, error: &str) -> String {
    let mut parts = error.splitn(3, ':');
    let line: usize = parts.next().and_then(|l| l.parse().ok()).unwrap_or(0);
    let column: usize = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    let source = text.lines().nth(line.saturating_sub(1)).unwrap_or_default();
    format!(
        "    {error}\n    | {source}\n    | {}^",
        " ".repeat(column.saturating_sub(1))
    )
}
