//! `jwt`: a request carries a JSON Web Token (`Authorization: Bearer`, or a cookie) signed by
//! one of the keys of a JWKS, with the right issuer and audience and within its validity;
//! its `sub` becomes the principal, its claims are kept for `authz` and chosen ones are
//! forwarded as headers. Only asymmetric algorithms are accepted, each key verifying only
//! the algorithms of its own type: `alg: none` and HMAC tokens are refused before any
//! signature check, so a public key can never be used as an HMAC secret. The keys are
//! compiled once (from a file with the config, or from a URL by `jwks_fetch`), and looked
//! up by `kid` per request.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::{AUTHORIZATION, COOKIE, WWW_AUTHENTICATE};
use http::{HeaderName, HeaderValue, StatusCode};
use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use lru::LruCache;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::build::FilterBuildError;
use super::headers::header_name;
use super::jwks_fetch::{JwksFetcher, JwksUrl};
use super::{Deny, Filter, FilterRequest, Verdict};
use crate::config::jwks::{Jwk, JwtAlg, KeyMaterial};
use crate::config::{JwksSource, JwtSpec};
use crate::proxy::stats::FilterStats;

/// A key ready to verify with, and the checks a token verified by it must pass.
pub struct VerifyKey {
    key: DecodingKey,
    validation: Validation,
}

/// The compiled keys of a JWKS: by `kid`, and the one key a token without `kid` may use.
#[derive(Default)]
pub struct KeySet {
    by_kid: HashMap<String, Arc<VerifyKey>>,
    /// Set when the JWKS has exactly one key.
    only: Option<Arc<VerifyKey>>,
}

/// How tokens are checked, shared by every key of the filter.
#[derive(Clone)]
pub struct Checks {
    issuer: Option<String>,
    audiences: Vec<String>,
    leeway_secs: u64,
    algorithms: Vec<JwtAlg>,
}

impl Checks {
    fn new(spec: &JwtSpec) -> Self {
        Self {
            issuer: spec.issuer.clone(),
            audiences: spec.audiences.clone(),
            leeway_secs: spec.leeway.as_secs(),
            algorithms: spec.algorithms.clone(),
        }
    }

    /// The validation for a key verifying `algs`: the allowed algorithms, `exp` (always
    /// required), `nbf`, and `iss` / `aud` when configured (then required too).
    fn validation(&self, algs: &[JwtAlg]) -> Validation {
        let algs: Vec<Algorithm> = algs
            .iter()
            .filter(|a| self.algorithms.contains(a))
            .map(|a| algorithm(*a))
            .collect();
        let mut validation = Validation::new(algs.first().copied().unwrap_or(Algorithm::RS256));
        validation.algorithms = algs;
        validation.leeway = self.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        if self.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.audiences);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        validation
    }
}

impl KeySet {
    /// Compiles `keys`; a key whose material cannot be read is an error.
    pub fn compile(keys: &[Jwk], checks: &Checks) -> Result<Self, jsonwebtoken::errors::Error> {
        let mut set = KeySet::default();
        let mut all = Vec::with_capacity(keys.len());
        for jwk in keys {
            let key = match &jwk.material {
                KeyMaterial::Rsa { n, e } => DecodingKey::from_rsa_components(n, e)?,
                KeyMaterial::Ec { x, y } => DecodingKey::from_ec_components(x, y)?,
                KeyMaterial::Ed25519 { x } => DecodingKey::from_ed_components(x)?,
            };
            let verify = Arc::new(VerifyKey {
                key,
                validation: checks.validation(&jwk.algs),
            });
            if let Some(kid) = &jwk.kid {
                set.by_kid.insert(kid.clone(), verify.clone());
            }
            all.push(verify);
        }
        if all.len() == 1 {
            set.only = all.pop();
        }
        Ok(set)
    }

    fn is_empty(&self) -> bool {
        self.by_kid.is_empty() && self.only.is_none()
    }
}

/// The compiled `jwt` filter.
pub struct JwtFilter {
    /// `Bearer realm="<filter name>"`, the challenge of a request without a token.
    challenge: HeaderValue,
    realm: String,
    keys: Arc<ArcSwap<KeySet>>,
    /// Tokens whose signature and static claims passed, by their exact text (see [`Verified`]).
    verified: Mutex<LruCache<Box<str>, Verified>>,
    leeway_secs: i64,
    cookie: Option<String>,
    forward: Vec<(String, HeaderName)>,
    /// Fetches the keys while the filter lives (`jwks_url`).
    _fetcher: Option<JwksFetcher>,
}

impl JwtFilter {
    /// Compiles filter `name`'s `spec`; a URL's keys start being fetched at once.
    pub fn new(
        name: &str,
        spec: &JwtSpec,
        stats: Arc<FilterStats>,
    ) -> Result<Self, FilterBuildError> {
        let checks = Checks::new(spec);
        let keys = Arc::new(ArcSwap::from_pointee(KeySet::default()));
        let fetcher = match &spec.keys {
            JwksSource::File { keys: jwks, .. } => {
                let set = KeySet::compile(jwks, &checks).map_err(FilterBuildError::Jwk)?;
                keys.store(Arc::new(set));
                None
            }
            JwksSource::Url {
                url,
                trust,
                refresh,
                timeout,
            } => Some(JwksFetcher::start(
                name,
                JwksUrl::new(url, trust.as_ref())?,
                *refresh,
                *timeout,
                checks,
                keys.clone(),
                stats,
            )?),
        };
        let realm = name.replace(['"', '\\'], "");
        Ok(Self {
            challenge: HeaderValue::from_str(&format!("Bearer realm=\"{realm}\"")).map_err(
                |source| FilterBuildError::HeaderValue {
                    name: "www-authenticate".into(),
                    source,
                },
            )?,
            realm,
            keys,
            verified: Mutex::new(LruCache::new(VERIFIED_TOKENS)),
            leeway_secs: i64::try_from(spec.leeway.as_secs()).unwrap_or(i64::MAX),
            cookie: spec.cookie.clone(),
            forward: spec
                .forward_claims
                .iter()
                .map(|(claim, header)| Ok((claim.clone(), header_name(header)?)))
                .collect::<Result<_, FilterBuildError>>()?,
            _fetcher: fetcher,
        })
    }

    /// The token the request carries: `Authorization: Bearer`, else the cookie.
    fn token<'r>(&self, request: &'r FilterRequest<'_>) -> Option<&'r str> {
        let bearer = request
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| bearer_token(v.as_bytes()));
        if bearer.is_some() {
            return bearer;
        }
        let cookie = self.cookie.as_deref()?;
        request
            .headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| {
                let (name, value) = pair.trim().split_once('=')?;
                (name == cookie).then_some(value)
            })
    }

    fn refuse(&self, reason: &'static str) -> Verdict {
        let challenge = if reason == "missing_token" {
            // RFC 6750 §3.1: no error code when the request had no credentials.
            self.challenge.clone()
        } else {
            let text = format!(
                "Bearer realm=\"{}\", error=\"invalid_token\", error_description=\"{reason}\"",
                self.realm
            );
            HeaderValue::from_str(&text).unwrap_or_else(|_| self.challenge.clone())
        };
        Verdict::Deny(Deny {
            status: StatusCode::UNAUTHORIZED,
            reason,
            body: None,
            headers: vec![(WWW_AUTHENTICATE, challenge)],
        })
    }
}

/// Valid tokens remembered per filter: a client presents the same token on every request, and
/// checking its signature costs far more than proxying the request (an ES256 check is tens of
/// microseconds). At most a few MiB of tokens.
const VERIFIED_TOKENS: NonZeroUsize = NonZeroUsize::new(4096).expect("not zero");

/// A token that passed every check with the key set `keys`: on a later request only its time
/// bounds are checked again, and only while `keys` is still the filter's key set (a rotation
/// that drops its key must refuse it).
struct Verified {
    keys: Arc<KeySet>,
    identity: Identity,
    exp: i64,
    nbf: Option<i64>,
}

/// What a verified token says of its bearer: its claims, and its `sub` as the principal
/// (made once per token, not per request).
#[derive(Clone)]
struct Identity {
    claims: Arc<Map<String, Value>>,
    principal: Option<Arc<str>>,
}

impl Identity {
    fn new(claims: Map<String, Value>) -> Self {
        let principal = match claims.get("sub") {
            Some(Value::String(sub)) => Some(sub.as_str().into()),
            _ => None,
        };
        Self {
            claims: Arc::new(claims),
            principal,
        }
    }
}

impl JwtFilter {
    /// The claims of `token` if it was verified with `keys` and is still within its time
    /// bounds; `Err` with the refusal when it is past them.
    fn remembered(
        &self,
        token: &str,
        keys: &Arc<KeySet>,
    ) -> Option<Result<Identity, &'static str>> {
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        let entry = verified.get(token)?;
        if !Arc::ptr_eq(&entry.keys, keys) {
            verified.pop(token);
            return None;
        }
        // The same bounds jsonwebtoken applies: exp < now - leeway, nbf > now + leeway.
        let now = unix_now();
        if entry.exp < now.saturating_sub(self.leeway_secs) {
            verified.pop(token);
            return Some(Err("expired"));
        }
        if entry
            .nbf
            .is_some_and(|nbf| nbf > now.saturating_add(self.leeway_secs))
        {
            return Some(Err("not_yet_valid"));
        }
        Some(Ok(entry.identity.clone()))
    }

    fn remember(&self, token: &str, keys: &Arc<KeySet>, identity: &Identity) {
        let claims = &identity.claims;
        let Some(exp) = claims.get("exp").and_then(Value::as_i64) else {
            return; // always required, so never the case for a verified token
        };
        let nbf = claims.get("nbf").and_then(Value::as_i64);
        let entry = Verified {
            keys: keys.clone(),
            identity: identity.clone(),
            exp,
            nbf,
        };
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        verified.put(token.into(), entry);
    }
}

/// The token of an `Authorization: Bearer <token>` value. Read as bytes (`HeaderValue::to_str`
/// checks a byte at a time, and a token is hundreds of bytes); a token with bytes no real token
/// has is refused by the cache lookup and the verification alike.
fn bearer_token(value: &[u8]) -> Option<&str> {
    let value = value.trim_ascii();
    let space = value.iter().position(|b| *b == b' ')?;
    let (scheme, token) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    std::str::from_utf8(token.trim_ascii()).ok()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The parts of a token's header the key lookup needs.
#[derive(Deserialize)]
struct TokenHeader {
    alg: String,
    kid: Option<String>,
}

impl Filter for JwtFilter {
    fn on_request(&self, request: &mut FilterRequest<'_>) -> Verdict {
        // Forwarded claims are the gateway's word only: a client's copies never go on.
        for (_, header) in &self.forward {
            request.headers.remove(header);
        }
        let Some(token) = self.token(request) else {
            return self.refuse("missing_token");
        };
        let keys = self.keys.load_full();
        let identity = match self.remembered(token, &keys) {
            Some(Ok(identity)) => identity,
            Some(Err(reason)) => return self.refuse(reason),
            None => match self.verify(token, &keys) {
                Ok(claims) => {
                    let identity = Identity::new(claims);
                    self.remember(token, &keys, &identity);
                    identity
                }
                Err(reason) => return self.refuse(reason),
            },
        };
        for (claim, header) in &self.forward {
            let value = match identity.claims.get(claim) {
                Some(Value::String(text)) => HeaderValue::from_str(text).ok(),
                Some(other) => HeaderValue::from_str(&other.to_string()).ok(),
                None => None,
            };
            if let Some(value) = value {
                request.headers.insert(header.clone(), value);
            }
        }
        if let Some(principal) = identity.principal {
            request.learned.principal = Some(principal);
        }
        request.learned.claims = Some(identity.claims);
        Verdict::Continue
    }
}

impl JwtFilter {
    /// Checks `token` against `keys` in full: header, key, algorithm, signature and claims.
    fn verify(&self, token: &str, keys: &KeySet) -> Result<Map<String, Value>, &'static str> {
        let header = token
            .split('.')
            .next()
            .and_then(|h| URL_SAFE_NO_PAD.decode(h).ok())
            .and_then(|h| serde_json::from_slice::<TokenHeader>(&h).ok())
            .ok_or("malformed")?;
        let alg = JwtAlg::from_name(&header.alg).ok_or("alg_refused")?;
        if keys.is_empty() {
            return Err("no_keys");
        }
        let key = match &header.kid {
            Some(kid) => keys.by_kid.get(kid),
            None => keys.only.as_ref(),
        };
        let key = key.ok_or("unknown_kid")?;
        if !key.validation.algorithms.contains(&algorithm(alg)) {
            return Err("alg_refused");
        }
        jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &key.validation)
            .map(|data| data.claims)
            .map_err(|err| reason(err.kind()))
    }
}

/// The deny reason of a token jsonwebtoken refused.
fn reason(kind: &JwtErrorKind) -> &'static str {
    match kind {
        JwtErrorKind::InvalidSignature => "bad_signature",
        JwtErrorKind::ExpiredSignature => "expired",
        JwtErrorKind::ImmatureSignature => "not_yet_valid",
        JwtErrorKind::InvalidIssuer => "wrong_issuer",
        JwtErrorKind::InvalidAudience => "wrong_audience",
        JwtErrorKind::MissingRequiredClaim(_) => "missing_claim",
        JwtErrorKind::InvalidAlgorithm => "alg_refused",
        _ => "malformed",
    }
}

fn algorithm(alg: JwtAlg) -> Algorithm {
    match alg {
        JwtAlg::RS256 => Algorithm::RS256,
        JwtAlg::RS384 => Algorithm::RS384,
        JwtAlg::RS512 => Algorithm::RS512,
        JwtAlg::PS256 => Algorithm::PS256,
        JwtAlg::PS384 => Algorithm::PS384,
        JwtAlg::PS512 => Algorithm::PS512,
        JwtAlg::ES256 => Algorithm::ES256,
        JwtAlg::ES384 => Algorithm::ES384,
        JwtAlg::EdDSA => Algorithm::EdDSA,
    }
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn the_bearer_token_is_read_from_the_authorization_value() {
        assert_eq!(bearer_token(b"Bearer abc.def.ghi"), Some("abc.def.ghi"));
        assert_eq!(bearer_token(b" bEaReR   abc.def \t"), Some("abc.def"));
        for refused in [
            &b"Basic abc"[..],
            b"Bearer",
            b"Bearer ",
            b"Bearerabc",
            b"",
            b" ",
        ] {
            assert_eq!(bearer_token(refused), None, "{refused:?}");
        }
        // Not UTF-8: no token.
        assert_eq!(bearer_token(b"Bearer \xff\xfe"), None);
    }
}
