//! The authentication and authorization filters' settings: files read and checked here,
//! once per load, so a bad keys file is a config error and the data path gets typed values.

use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::check;
use crate::config::diagnostic::Reporter;
use crate::config::file;
use crate::config::jwks::{self, JwtAlg};
use crate::config::model::{
    ApiKeySpec, AuthzAction, AuthzPath, AuthzRule, AuthzSpec, ExtAuthzSpec, FailureMode,
    JwksSource, JwtSpec, TrustRoots, key_hash,
};

/// The default header of an `api_key` filter given neither `header` nor `query`.
const DEFAULT_API_KEY_HEADER: &str = "x-api-key";

/// An `api_key` filter: its keys file read and hashed, where the key is presented.
pub(super) fn api_key(
    raw: &Spanned<file::ApiKey>,
    base_dir: &Path,
    ctx: &str,
    r: &mut Reporter,
) -> Option<ApiKeySpec> {
    let a = raw.get_ref();
    let header = match &a.header {
        Some(h) => check::header_name(h, ctx, r).map(Some),
        None if a.query.is_none() => Some(Some(DEFAULT_API_KEY_HEADER.to_owned())),
        None => Some(None),
    };
    let query = match &a.query {
        Some(q) if q.get_ref().is_empty() || !q.get_ref().bytes().all(is_query_name_byte) => {
            r.error_in(
                &q.span(),
                ctx,
                format!(
                    "api_key.query {:?} is not a query parameter name (letters, digits, `-._~`)",
                    q.get_ref()
                ),
            );
            None
        }
        Some(q) => Some(Some(q.get_ref().clone())),
        None => Some(None),
    };
    let file = check::existing_file(&a.keys_file, base_dir, "api_key.keys_file", ctx, r)?;
    let keys = match std::fs::read_to_string(&file) {
        Ok(text) => match parse_keys(&text) {
            Ok(keys) => Some(keys),
            Err((line, problem)) => {
                r.error_in(
                    &a.keys_file.span(),
                    ctx,
                    format!("api_key.keys_file {}:{line}: {problem}", file.display()),
                );
                None
            }
        },
        Err(err) => {
            r.error_in(
                &a.keys_file.span(),
                ctx,
                format!("api_key.keys_file {} cannot be read: {err}", file.display()),
            );
            None
        }
    };
    Some(ApiKeySpec {
        file,
        keys: keys?,
        header: header?,
        query: query?,
    })
}

fn is_query_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The shortest key accepted: shorter ones can be guessed.
const MIN_KEY_LEN: usize = 16;

/// What is wrong with a line of a keys file.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum KeysLineError {
    /// Not two fields.
    #[error("expected `name key`")]
    Shape,
    /// A name with spaces or control characters.
    #[error("name {0:?} is not visible ASCII")]
    Name(String),
    /// A key too short or not visible ASCII.
    #[error("the key of {0:?} is not at least {MIN_KEY_LEN} visible ASCII characters")]
    Key(String),
    /// A name already used.
    #[error("name {0:?} is used twice")]
    DuplicateName(String),
    /// A key already used (by the second name).
    #[error("the key of {0:?} is also the key of {1:?}")]
    DuplicateKey(String, String),
}

/// `(name, SHA-256 of the key)` of every key of a keys file.
pub(crate) type Keys = Vec<(String, [u8; 32])>;

/// A keys file: `name key` per line, blank lines and `#` comments skipped. Each key is kept
/// only as its SHA-256. `Err((line, problem))` for the first bad line.
pub(crate) fn parse_keys(text: &str) -> Result<Keys, (usize, KeysLineError)> {
    let mut keys: Keys = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_ascii_whitespace();
        let (Some(name), Some(key), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err((number, KeysLineError::Shape));
        };
        if !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err((number, KeysLineError::Name(name.into())));
        }
        if key.len() < MIN_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err((number, KeysLineError::Key(name.into())));
        }
        let hash = key_hash(key.as_bytes());
        if keys.iter().any(|(n, _)| n == name) {
            return Err((number, KeysLineError::DuplicateName(name.into())));
        }
        if let Some((other, _)) = keys.iter().find(|(_, h)| *h == hash) {
            return Err((
                number,
                KeysLineError::DuplicateKey(name.into(), other.clone()),
            ));
        }
        keys.push((name.to_owned(), hash));
    }
    Ok(keys)
}

/// The default `jwks_refresh`.
const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(300);
/// The default `jwks_timeout`.
const DEFAULT_JWKS_TIMEOUT: Duration = Duration::from_secs(5);
/// The default `leeway`.
const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
/// The longest `leeway`.
const MAX_LEEWAY: Duration = Duration::from_secs(3600);

/// A `jwt` filter: its key source (a file read and checked now), claims checks and what
/// it forwards.
pub(super) fn jwt(
    raw: &Spanned<file::Jwt>,
    base_dir: &Path,
    ctx: &str,
    r: &mut Reporter,
) -> Option<JwtSpec> {
    let j = raw.get_ref();
    let keys = jwks_source(raw, base_dir, ctx, r);
    let leeway = match &j.leeway {
        None => Some(DEFAULT_LEEWAY),
        Some(text) => match humantime::parse_duration(text.get_ref()) {
            Ok(d) if d <= MAX_LEEWAY => Some(d),
            _ => {
                r.error_in(
                    &text.span(),
                    ctx,
                    format!(
                        "jwt.leeway {:?} is not a duration from \"0s\" to \"1h\"",
                        text.get_ref()
                    ),
                );
                None
            }
        },
    };
    let issuer = match &j.issuer {
        Some(i) if i.get_ref().is_empty() => {
            r.error_in(&i.span(), ctx, "jwt.issuer is empty");
            None
        }
        Some(i) => Some(Some(i.get_ref().clone())),
        None => Some(None),
    };
    let mut audiences = Vec::new();
    for aud in &j.audiences {
        if aud.get_ref().is_empty() {
            r.error_in(&aud.span(), ctx, "jwt.audiences holds an empty audience");
        }
        audiences.push(aud.get_ref().clone());
    }
    let cookie = match &j.cookie {
        Some(c) => check::token(c, "jwt.cookie", ctx, r).map(Some),
        None => Some(None),
    };
    let algorithms = match &j.algorithms {
        None => Some(JwtAlg::ALL.to_vec()),
        Some(list) => {
            let mut algs = Vec::new();
            let mut ok = true;
            for name in list {
                match JwtAlg::from_name(name.get_ref()) {
                    Some(alg) if !algs.contains(&alg) => algs.push(alg),
                    Some(_) => {}
                    None => {
                        ok = false;
                        r.error_in(
                            &name.span(),
                            ctx,
                            format!(
                                "jwt.algorithms: {:?} is not accepted (RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA; never none or HS*)",
                                name.get_ref()
                            ),
                        );
                    }
                }
            }
            if ok && algs.is_empty() {
                r.error_in(&raw.span(), ctx, "jwt.algorithms is empty");
                ok = false;
            }
            ok.then_some(algs)
        }
    };
    let mut forward_claims = Vec::new();
    let mut forward_ok = true;
    for (claim, header) in &j.forward_claims {
        if claim.get_ref().is_empty() {
            r.error_in(
                &claim.span(),
                ctx,
                "jwt.forward_claims: a claim name is empty",
            );
            forward_ok = false;
        }
        match check::header_name(header, ctx, r) {
            Some(h) if forward_claims.iter().any(|(_, other)| *other == h) => {
                r.error_in(
                    &header.span(),
                    ctx,
                    format!("jwt.forward_claims: header {h:?} is used twice"),
                );
                forward_ok = false;
            }
            Some(h) => forward_claims.push((claim.get_ref().clone(), h)),
            None => forward_ok = false,
        }
    }
    let audiences_ok = j.audiences.iter().all(|a| !a.get_ref().is_empty());
    if !(forward_ok && audiences_ok) {
        return None;
    }
    Some(JwtSpec {
        keys: keys?,
        issuer: issuer?,
        audiences,
        leeway: leeway?,
        cookie: cookie?,
        algorithms: algorithms?,
        forward_claims,
    })
}

/// `jwks_file` or `jwks_url` (exactly one), with the URL's timings.
fn jwks_source(
    raw: &Spanned<file::Jwt>,
    base_dir: &Path,
    ctx: &str,
    r: &mut Reporter,
) -> Option<JwksSource> {
    let j = raw.get_ref();
    match (&j.jwks_file, &j.jwks_url) {
        (Some(path), None) => {
            check::not_here(
                j.jwks_refresh.as_ref(),
                "jwt.jwks_refresh applies only with jwt.jwks_url (a file is read with the config)",
                ctx,
                r,
            );
            check::not_here(
                j.jwks_timeout.as_ref(),
                "jwt.jwks_timeout applies only with jwt.jwks_url",
                ctx,
                r,
            );
            check::not_here(
                j.jwks_ca_file.as_ref(),
                "jwt.jwks_ca_file applies only with an https jwt.jwks_url",
                ctx,
                r,
            );
            let file = check::existing_file(path, base_dir, "jwt.jwks_file", ctx, r)?;
            let text = match std::fs::read_to_string(&file) {
                Ok(text) => text,
                Err(err) => {
                    r.error_in(
                        &path.span(),
                        ctx,
                        format!("jwt.jwks_file {} cannot be read: {err}", file.display()),
                    );
                    return None;
                }
            };
            match jwks::parse(&text) {
                Ok(keys) => Some(JwksSource::File { path: file, keys }),
                Err(err) => {
                    let at = match &err {
                        jwks::JwksError::Json { .. } => format!("{}:{err}", file.display()),
                        _ => format!("{}: {err}", file.display()),
                    };
                    r.error_in(&path.span(), ctx, format!("jwt.jwks_file {at}"));
                    None
                }
            }
        }
        (None, Some(url)) => {
            let refresh = check::duration(
                j.jwks_refresh.as_ref(),
                DEFAULT_JWKS_REFRESH,
                "jwt.jwks_refresh",
                ctx,
                r,
            );
            let timeout = check::duration(
                j.jwks_timeout.as_ref(),
                DEFAULT_JWKS_TIMEOUT,
                "jwt.jwks_timeout",
                ctx,
                r,
            );
            let text = url.get_ref();
            let trust = service_url(
                url,
                j.jwks_ca_file.as_ref(),
                ServiceUrlField {
                    url: "jwt.jwks_url",
                    ca_file: "jwt.jwks_ca_file",
                    example: "https://idp.example.com/.well-known/jwks.json",
                    query_allowed: true,
                },
                base_dir,
                ctx,
                r,
            );
            Some(JwksSource::Url {
                url: text.clone(),
                trust: trust?,
                refresh: refresh?,
                timeout: timeout?,
            })
        }
        (Some(_), Some(url)) => {
            r.error_in(
                &url.span(),
                ctx,
                "jwt takes one of jwks_file and jwks_url, not both",
            );
            None
        }
        (None, None) => {
            r.error_in(
                &raw.span(),
                ctx,
                "jwt needs jwks_file or jwks_url, where its verification keys come from",
            );
            None
        }
    }
}

/// An `ext_authz` filter: an http URL, a timeout, a failure mode and header names.
pub(super) fn ext_authz(
    raw: &Spanned<file::ExtAuthz>,
    base_dir: &Path,
    ctx: &str,
    r: &mut Reporter,
) -> Option<ExtAuthzSpec> {
    let e = raw.get_ref();
    let text = e.url.get_ref();
    let trust = service_url(
        &e.url,
        e.ca_file.as_ref(),
        ServiceUrlField {
            url: "ext_authz.url",
            ca_file: "ext_authz.ca_file",
            example: "http://authz.internal:9000/check",
            // The request's own query follows the URL's path.
            query_allowed: false,
        },
        base_dir,
        ctx,
        r,
    );
    let timeout = check::duration(
        e.timeout.as_ref(),
        DEFAULT_EXT_AUTHZ_TIMEOUT,
        "ext_authz.timeout",
        ctx,
        r,
    );
    let failure_mode = match e.failure_mode.as_ref().map(|m| (m, m.get_ref().as_str())) {
        None | Some((_, "closed")) => Some(FailureMode::Closed),
        Some((_, "open")) => Some(FailureMode::Open),
        Some((m, other)) => {
            r.error_in(
                &m.span(),
                ctx,
                format!("ext_authz.failure_mode {other:?} is neither \"open\" nor \"closed\""),
            );
            None
        }
    };
    let names = |list: &[Spanned<String>], r: &mut Reporter| -> Option<Vec<String>> {
        let checked: Vec<_> = list.iter().map(|n| check::header_name(n, ctx, r)).collect();
        checked.into_iter().collect()
    };
    let send_headers = match &e.send_headers {
        Some(list) => names(list, r),
        None => Some(vec!["authorization".to_owned()]),
    };
    let add_to_request = names(&e.add_to_request, r);
    Some(ExtAuthzSpec {
        url: text.clone(),
        trust: trust?,
        timeout: timeout?,
        failure_mode: failure_mode?,
        send_headers: send_headers?,
        add_to_request: add_to_request?,
    })
}

/// The default `ext_authz.timeout`.
const DEFAULT_EXT_AUTHZ_TIMEOUT: Duration = Duration::from_millis(200);

/// An `authz` filter: its rules in order and its default.
pub(super) fn authz(raw: &Spanned<file::Authz>, ctx: &str, r: &mut Reporter) -> Option<AuthzSpec> {
    let a = raw.get_ref();
    let default = action(&a.default, "authz.default", ctx, r);
    let rules: Vec<_> = a.rule.iter().map(|rule| authz_rule(rule, ctx, r)).collect();
    Some(AuthzSpec {
        rules: rules.into_iter().collect::<Option<_>>()?,
        default: default?,
    })
}

fn action(value: &Spanned<String>, what: &str, ctx: &str, r: &mut Reporter) -> Option<AuthzAction> {
    match value.get_ref().as_str() {
        "allow" => Some(AuthzAction::Allow),
        "deny" => Some(AuthzAction::Deny),
        other => {
            r.error_in(
                &value.span(),
                ctx,
                format!("{what} {other:?} is neither \"allow\" nor \"deny\""),
            );
            None
        }
    }
}

fn authz_rule(raw: &Spanned<file::AuthzRule>, ctx: &str, r: &mut Reporter) -> Option<AuthzRule> {
    let rule = raw.get_ref();
    let ctx = &format!("{ctx}, authz rule on line {}", r.line_of(raw.span().start));
    let action = action(&rule.action, "action", ctx, r);
    let mut ok = true;
    let mut nonempty = |list: &Option<Vec<Spanned<String>>>, what: &str, r: &mut Reporter| {
        if let Some(l) = list
            && l.is_empty()
        {
            r.error_in(
                &raw.span(),
                ctx,
                format!("{what} is empty, so the rule could never match"),
            );
            ok = false;
        }
    };
    nonempty(&rule.principals, "principals", r);
    nonempty(&rule.methods, "methods", r);
    nonempty(&rule.client_cidrs, "client_cidrs", r);
    let principals: Vec<String> = rule
        .principals
        .iter()
        .flatten()
        .map(|p| p.get_ref().clone())
        .collect();
    let claims: Vec<(String, String)> = rule
        .claims
        .iter()
        .map(|(c, v)| (c.get_ref().clone(), v.get_ref().clone()))
        .collect();
    let methods: Vec<_> = rule
        .methods
        .iter()
        .flatten()
        .map(|m| check::token(m, "methods", ctx, r).map(|m| m.to_ascii_uppercase()))
        .collect();
    let path = match (&rule.path, &rule.path_prefix) {
        (Some(_), Some(prefix)) => {
            r.error_in(
                &prefix.span(),
                ctx,
                "a rule takes path or path_prefix, not both",
            );
            None
        }
        (Some(p), None) => check::url_path(p, "path", ctx, r).map(|p| Some(AuthzPath::Exact(p))),
        (None, Some(p)) => {
            check::url_path(p, "path_prefix", ctx, r).map(|p| Some(AuthzPath::Prefix(p)))
        }
        (None, None) => Some(None),
    };
    let cidrs: Vec<_> = rule
        .client_cidrs
        .iter()
        .flatten()
        .map(|c| {
            let text = c.get_ref().trim();
            let parsed = text
                .parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                Ok(net) => Some(net.trunc()),
                Err(_) => {
                    r.error_in(
                        &c.span(),
                        ctx,
                        format!("client_cidrs: {text:?} is not a CIDR like \"10.0.0.0/8\" or an IP address"),
                    );
                    None
                }
            }
        })
        .collect();
    if !ok {
        return None;
    }
    Some(AuthzRule {
        action: action?,
        principals,
        claims,
        methods: methods.into_iter().collect::<Option<_>>()?,
        path: path?,
        client_cidrs: cidrs.into_iter().collect::<Option<_>>()?,
    })
}

/// How a filter's URL of an outside service is named in errors.
struct ServiceUrlField {
    url: &'static str,
    ca_file: &'static str,
    example: &'static str,
    query_allowed: bool,
}

/// Checks the URL of a service a filter calls (`http://` or `https://`, a host, no
/// fragment) and its CA bundle: `Some(None)` for http, `Some(Some(roots))` for https.
fn service_url(
    url: &Spanned<String>,
    ca_file: Option<&Spanned<String>>,
    field: ServiceUrlField,
    base_dir: &Path,
    ctx: &str,
    r: &mut Reporter,
) -> Option<Option<TrustRoots>> {
    let text = url.get_ref();
    let parsed: Option<http::Uri> = text.parse().ok();
    let https = match parsed.as_ref().filter(|u| {
        u.host().is_some_and(|h| !h.is_empty()) && (field.query_allowed || u.query().is_none())
    }) {
        Some(u) if u.scheme_str() == Some("http") => false,
        Some(u) if u.scheme_str() == Some("https") => true,
        _ => {
            let query = if field.query_allowed {
                ""
            } else {
                ", no query"
            };
            r.error_in(
                &url.span(),
                ctx,
                format!(
                    "{} {text:?} is not a URL like \"{}\" (http or https{query})",
                    field.url, field.example
                ),
            );
            return None;
        }
    };
    match (https, ca_file) {
        (false, None) => Some(None),
        (false, Some(ca)) => {
            r.error_in(
                &ca.span(),
                ctx,
                format!("{} applies only with an https {}", field.ca_file, field.url),
            );
            None
        }
        (true, None) => Some(Some(TrustRoots::System)),
        (true, Some(ca)) => {
            let (path, roots) = check::ca_bundle(ca, base_dir, field.ca_file, ctx, r)?;
            Some(Some(TrustRoots::Bundle { path, roots }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keys_file_is_read_into_hashes_and_its_bad_lines_named() {
        let keys =
            parse_keys("# c\n\nacme 0123456789abcdef\n  b  fedcba9876543210  \n").expect("valid");
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0], ("acme".into(), key_hash(b"0123456789abcdef")));
        assert_eq!(keys[1].0, "b");
        let err = |text: &str| parse_keys(text).expect_err("invalid");
        assert_eq!(err("a 0123456789abcdef\nb\n").0, 2);
        assert_eq!(err("a 0123456789abcdef extra\n").0, 1);
        assert!(err("a short\n").1.to_string().contains("at least 16"));
        assert!(
            err("a 0123456789abcdef\na 0123456789abcdeX\n").1
                == KeysLineError::DuplicateName("a".into())
        );
        assert!(
            err("a 0123456789abcdef\nb 0123456789abcdef\n").1
                == KeysLineError::DuplicateKey("b".into(), "a".into())
        );
    }
}
