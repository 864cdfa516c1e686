//! `authz`: ordered allow/deny rules on what earlier filters established (the principal,
//! a token's claims) and on the request (method, normalised path, client address). The first
//! rule whose conditions all hold decides; a request no rule matches gets the default.
//! Denied requests are answered 403.

use http::{Method, StatusCode};
use ipnet::IpNet;
use serde_json::Value;

use super::build::FilterBuildError;
use super::{Deny, Filter, FilterRequest, Verdict};
use crate::config::{AuthzAction, AuthzPath, AuthzRule, AuthzSpec};

/// One compiled rule.
struct Rule {
    allow: bool,
    principals: Vec<String>,
    /// `(claim, value, value read as JSON)`: the JSON form matches numbers and booleans.
    claims: Vec<(String, String, Option<Value>)>,
    methods: Vec<Method>,
    path: Option<AuthzPath>,
    client_cidrs: Vec<IpNet>,
}

/// The compiled `authz` filter.
pub struct AuthzFilter {
    rules: Vec<Rule>,
    allow_by_default: bool,
}

impl AuthzFilter {
    /// Compiles `spec`.
    pub fn new(spec: &AuthzSpec) -> Result<Self, FilterBuildError> {
        let rules = spec
            .rules
            .iter()
            .map(|rule| {
                Ok(Rule {
                    allow: rule.action == AuthzAction::Allow,
                    principals: rule.principals.clone(),
                    claims: rule
                        .claims
                        .iter()
                        .map(|(c, v)| (c.clone(), v.clone(), serde_json::from_str(v).ok()))
                        .collect(),
                    methods: methods(rule)?,
                    path: rule.path.clone(),
                    client_cidrs: rule.client_cidrs.clone(),
                })
            })
            .collect::<Result<_, FilterBuildError>>()?;
        Ok(Self {
            rules,
            allow_by_default: spec.default == AuthzAction::Allow,
        })
    }
}

fn methods(rule: &AuthzRule) -> Result<Vec<Method>, FilterBuildError> {
    rule.methods
        .iter()
        .map(|m| Method::from_bytes(m.as_bytes()).map_err(|_| FilterBuildError::Method(m.clone())))
        .collect()
}

impl Rule {
    fn matches(&self, request: &FilterRequest<'_>) -> bool {
        let principal = request.learned.principal.as_deref();
        (self.principals.is_empty()
            || principal.is_some_and(|p| self.principals.iter().any(|want| want == p)))
            && (self.methods.is_empty() || self.methods.contains(request.method))
            && match &self.path {
                None => true,
                Some(AuthzPath::Exact(path)) => request.uri.path() == path,
                Some(AuthzPath::Prefix(prefix)) => request.uri.path().starts_with(prefix.as_str()),
            }
            && (self.client_cidrs.is_empty()
                || self
                    .client_cidrs
                    .iter()
                    .any(|net| net.contains(&request.client.ip())))
            && self.claims.iter().all(|(claim, want, want_json)| {
                let Some(claims) = &request.learned.claims else {
                    return false;
                };
                match claims.get(claim) {
                    Some(Value::String(s)) => s == want,
                    Some(Value::Array(items)) => items.iter().any(|item| match item {
                        Value::String(s) => s == want,
                        other => want_json.as_ref() == Some(other),
                    }),
                    Some(Value::Null) | None => false,
                    Some(other) => want_json.as_ref() == Some(other),
                }
            })
    }
}

impl Filter for AuthzFilter {
    fn on_request(&self, request: &mut FilterRequest<'_>) -> Verdict {
        let (allow, reason) = match self.rules.iter().find(|rule| rule.matches(request)) {
            Some(rule) => (rule.allow, "denied_by_rule"),
            None => (self.allow_by_default, "denied_by_default"),
        };
        if allow {
            Verdict::Continue
        } else {
            Verdict::Deny(Deny {
                status: StatusCode::FORBIDDEN,
                reason,
                body: None,
                headers: Vec::new(),
            })
        }
    }
}
