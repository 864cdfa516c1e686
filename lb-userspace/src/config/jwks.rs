//! JSON Web Key Sets (RFC 7517): the public keys a `jwt` filter verifies tokens with, read
//! from a file at config load or fetched from a URL at run time. Only asymmetric signing
//! keys are accepted (RSA, EC P-256/P-384, Ed25519); a symmetric (`oct`) key is refused, so
//! no token can ever be checked with an HMAC. Keys marked `"use": "enc"` are skipped.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

/// A signature algorithm a `jwt` filter accepts: asymmetric ones only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum JwtAlg {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
}

impl JwtAlg {
    /// Every accepted algorithm.
    pub const ALL: [JwtAlg; 9] = [
        Self::RS256,
        Self::RS384,
        Self::RS512,
        Self::PS256,
        Self::PS384,
        Self::PS512,
        Self::ES256,
        Self::ES384,
        Self::EdDSA,
    ];

    /// The algorithm named `name` in a token's or key's `alg`; `None` for any other
    /// (`none`, `HS256`, ...).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The name in `alg`.
    pub fn name(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::RS384 => "RS384",
            Self::RS512 => "RS512",
            Self::PS256 => "PS256",
            Self::PS384 => "PS384",
            Self::PS512 => "PS512",
            Self::ES256 => "ES256",
            Self::ES384 => "ES384",
            Self::EdDSA => "EdDSA",
        }
    }
}

/// A key's public material, base64url components as in the JWK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMaterial {
    /// An RSA key: modulus and exponent.
    Rsa {
        /// `n`.
        n: String,
        /// `e`.
        e: String,
    },
    /// An EC key: the point's coordinates.
    Ec {
        /// `x`.
        x: String,
        /// `y`.
        y: String,
    },
    /// An Ed25519 key.
    Ed25519 {
        /// `x`.
        x: String,
    },
}

/// One verification key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwk {
    /// `kid`, which tokens name.
    pub kid: Option<String>,
    /// The algorithms this key verifies: those its type allows, or only its `alg`.
    pub algs: Vec<JwtAlg>,
    /// The public key.
    pub material: KeyMaterial,
}

/// Why a key set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// Not JSON, or not a `{"keys": [...]}` object.
    #[error("{line}:{column}: {message}")]
    Json {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What serde_json said.
        message: String,
    },
    /// A key that cannot verify tokens.
    #[error("key {index} ({kid}): {source}")]
    Key {
        /// 0-based position in `keys`.
        index: usize,
        /// Its `kid`, or `no kid`.
        kid: String,
        /// Why.
        #[source]
        source: KeyError,
    },
    /// Two keys with one `kid`: a token naming it would be ambiguous.
    #[error("kid {0:?} is used by two keys")]
    DuplicateKid(String),
    /// No key left to verify with.
    #[error("no signing key in the set")]
    Empty,
}

/// Why one key of a set cannot verify tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A member the key type needs is absent.
    #[error("no `{0}`")]
    Missing(&'static str),
    /// A member is not base64url.
    #[error("`{member}` is not base64url: {source}")]
    NotBase64 {
        /// `n`, `e`, `x` or `y`.
        member: &'static str,
        /// What the decoder said.
        #[source]
        source: base64::DecodeError,
    },
    /// An EC or OKP key on a curve no accepted algorithm uses.
    #[error("curve {0:?} is not supported (P-256, P-384 and Ed25519 are)")]
    Curve(Option<String>),
    /// `oct` or an unknown key type: only public keys verify tokens.
    #[error("kty {0:?} is refused: only RSA, EC and OKP public keys verify tokens")]
    KeyType(String),
    /// `alg` names an algorithm this key type cannot verify.
    #[error("alg {alg:?} does not fit a {kty} key")]
    AlgMismatch {
        /// The key's `alg`.
        alg: String,
        /// The key's `kty`.
        kty: String,
    },
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<RawKey>,
}

/// A JWK as written; other members (`x5c`, ...) are ignored.
#[derive(Deserialize)]
struct RawKey {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// Parses a JWKS document.
pub fn parse(text: &str) -> Result<Vec<Jwk>, JwksError> {
    let raw: RawSet = serde_json::from_str(text).map_err(|e| JwksError::Json {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    let mut keys: Vec<Jwk> = Vec::with_capacity(raw.keys.len());
    for (index, key) in raw.keys.into_iter().enumerate() {
        if key.use_.as_deref() == Some("enc") {
            continue;
        }
        let kid = key.kid.clone();
        let parsed = jwk(key).map_err(|source| JwksError::Key {
            index,
            kid: kid.clone().unwrap_or_else(|| "no kid".into()),
            source,
        })?;
        if let Some(kid) = &parsed.kid
            && keys.iter().any(|k| k.kid.as_ref() == Some(kid))
        {
            return Err(JwksError::DuplicateKid(kid.clone()));
        }
        keys.push(parsed);
    }
    if keys.is_empty() {
        return Err(JwksError::Empty);
    }
    Ok(keys)
}

fn jwk(key: RawKey) -> Result<Jwk, KeyError> {
    let component = |value: Option<String>, member: &'static str| -> Result<String, KeyError> {
        let value = value.ok_or(KeyError::Missing(member))?;
        URL_SAFE_NO_PAD
            .decode(value.trim_end_matches('='))
            .map_err(|source| KeyError::NotBase64 { member, source })?;
        Ok(value)
    };
    let (material, allowed): (KeyMaterial, &[JwtAlg]) = match (key.kty.as_str(), key.crv.as_deref())
    {
        ("RSA", _) => (
            KeyMaterial::Rsa {
                n: component(key.n, "n")?,
                e: component(key.e, "e")?,
            },
            &[
                JwtAlg::RS256,
                JwtAlg::RS384,
                JwtAlg::RS512,
                JwtAlg::PS256,
                JwtAlg::PS384,
                JwtAlg::PS512,
            ],
        ),
        ("EC", Some(curve @ ("P-256" | "P-384"))) => (
            KeyMaterial::Ec {
                x: component(key.x, "x")?,
                y: component(key.y, "y")?,
            },
            if curve == "P-256" {
                &[JwtAlg::ES256]
            } else {
                &[JwtAlg::ES384]
            },
        ),
        ("OKP", Some("Ed25519")) => (
            KeyMaterial::Ed25519 {
                x: component(key.x, "x")?,
            },
            &[JwtAlg::EdDSA],
        ),
        ("EC" | "OKP", curve) => return Err(KeyError::Curve(curve.map(str::to_owned))),
        (kty, _) => return Err(KeyError::KeyType(kty.to_owned())),
    };
    let algs = match key.alg.as_deref() {
        None => allowed.to_vec(),
        Some(name) => match JwtAlg::from_name(name) {
            Some(alg) if allowed.contains(&alg) => vec![alg],
            _ => {
                return Err(KeyError::AlgMismatch {
                    alg: name.to_owned(),
                    kty: key.kty,
                });
            }
        },
    };
    Ok(Jwk {
        kid: key.kid,
        algs,
        material,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_asymmetric_signing_keys_are_kept() {
        let set = parse(
            r#"{"keys":[
              {"kty":"RSA","kid":"r","n":"AQAB","e":"AQAB","x5c":["..."]},
              {"kty":"EC","kid":"e","crv":"P-256","x":"AQ","y":"AQ","alg":"ES256"},
              {"kty":"OKP","kid":"o","crv":"Ed25519","x":"AQ"},
              {"kty":"RSA","kid":"enc","use":"enc","n":"AQAB","e":"AQAB"}
            ]}"#,
        )
        .expect("valid");
        assert_eq!(set.len(), 3);
        assert_eq!(set[0].algs.len(), 6);
        assert_eq!(set[1].algs, [JwtAlg::ES256]);
        assert_eq!(set[2].algs, [JwtAlg::EdDSA]);
        let err = |text: &str| parse(text).expect_err("invalid").to_string();
        assert!(err(r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).contains("refused"));
        assert!(
            err(r#"{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB","alg":"HS256"}]}"#)
                .contains("does not fit")
        );
        assert!(
            err(r#"{"keys":[{"kty":"EC","crv":"P-521","x":"AQ","y":"AQ"}]}"#)
                .contains("not supported")
        );
        assert!(err("{\n\"keys\": [}").starts_with("2:"));
        assert!(err(r#"{"keys":[]}"#).contains("no signing key"));
    }
}
