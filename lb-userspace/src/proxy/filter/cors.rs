//! `cors`: Cross-Origin Resource Sharing per the Fetch standard. A preflight (`OPTIONS` with
//! `Origin` and `Access-Control-Request-Method`) from an allowed origin is answered here,
//! `204` with what the origin may do; from any other origin it is answered `403` without CORS
//! headers, so the browser refuses the request. Other requests go on; the response to one from
//! an allowed origin gets `Access-Control-Allow-Origin` (and `Vary: Origin`), a disallowed
//! origin's gets no CORS headers. Everything is compiled into header values once.

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

use super::build::FilterBuildError;
use super::{Deny, Filter, FilterRequest, Learned, Verdict};
use crate::config::CorsSpec;

static VARY_PREFLIGHT: HeaderValue = HeaderValue::from_static(
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
);

/// The compiled `cors` filter.
pub struct CorsFilter {
    /// `None`: any origin (`*`).
    origins: Option<Vec<HeaderValue>>,
    methods: HeaderValue,
    allowed_methods: Vec<Method>,
    headers: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    credentials: bool,
    max_age: Option<HeaderValue>,
}

impl CorsFilter {
    /// Compiles `spec`.
    pub fn new(spec: &CorsSpec) -> Result<Self, FilterBuildError> {
        let value = |name: &str, text: String| {
            HeaderValue::from_str(&text).map_err(|source| FilterBuildError::HeaderValue {
                name: name.to_owned(),
                source,
            })
        };
        let list =
            |name: &str, items: &[String]| -> Result<Option<HeaderValue>, FilterBuildError> {
                if items.is_empty() {
                    Ok(None)
                } else {
                    value(name, items.join(", ")).map(Some)
                }
            };
        Ok(Self {
            origins: match &spec.allow_origins {
                None => None,
                Some(list) => Some(
                    list.iter()
                        .map(|o| value("access-control-allow-origin", o.clone()))
                        .collect::<Result<_, _>>()?,
                ),
            },
            methods: value(
                "access-control-allow-methods",
                spec.allow_methods.join(", "),
            )?,
            allowed_methods: spec
                .allow_methods
                .iter()
                .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                .collect(),
            headers: list("access-control-allow-headers", &spec.allow_headers)?,
            expose: list("access-control-expose-headers", &spec.expose_headers)?,
            credentials: spec.allow_credentials,
            max_age: spec
                .max_age
                .map(|age| value("access-control-max-age", age.as_secs().to_string()))
                .transpose()?,
        })
    }

    /// The `Access-Control-Allow-Origin` for `origin`, when it is allowed.
    fn allow_origin(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        match &self.origins {
            // Credentials never go with `*` (validation refuses the pair), so `*` is enough.
            None => Some(HeaderValue::from_static("*")),
            Some(list) => list.iter().find(|o| *o == origin).cloned(),
        }
    }
}

impl Filter for CorsFilter {
    fn on_request(&self, request: &mut FilterRequest<'_>) -> Verdict {
        let Some(origin) = request.headers.get(ORIGIN) else {
            return Verdict::Continue;
        };
        let allowed = self.allow_origin(origin);
        let preflight = *request.method == Method::OPTIONS
            && request.headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD);
        if !preflight {
            request.learned.cors_origin = allowed;
            return Verdict::Continue;
        }
        let requested = request
            .headers
            .get(ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok());
        let method_ok = requested.is_some_and(|m| self.allowed_methods.contains(&m));
        let Some(allow_origin) = allowed.filter(|_| method_ok) else {
            return Verdict::Deny(Deny {
                status: StatusCode::FORBIDDEN,
                reason: "preflight_refused",
                body: None,
                headers: vec![(VARY, VARY_PREFLIGHT.clone())],
            });
        };
        let mut headers: Vec<(HeaderName, HeaderValue)> = vec![
            (ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin),
            (ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone()),
            (VARY, VARY_PREFLIGHT.clone()),
        ];
        if let Some(h) = &self.headers {
            headers.push((ACCESS_CONTROL_ALLOW_HEADERS, h.clone()));
        }
        if self.credentials {
            headers.push((
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            ));
        }
        if let Some(age) = &self.max_age {
            headers.push((ACCESS_CONTROL_MAX_AGE, age.clone()));
        }
        // A preflight is answered here, never forwarded: the framework counts it as the
        // filter's own answer.
        Verdict::Deny(Deny {
            status: StatusCode::NO_CONTENT,
            reason: "preflight",
            body: None,
            headers,
        })
    }

    fn on_response(&self, headers: &mut HeaderMap, learned: &Learned) {
        if self.origins.is_some() {
            // The answer depends on Origin whether or not it was allowed: caches must know.
            headers.append(VARY, HeaderValue::from_static("Origin"));
        }
        let Some(origin) = &learned.cors_origin else {
            return;
        };
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if self.credentials {
            headers.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(expose) = &self.expose {
            headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }
}
