//! Keys and tokens for the gateway's JWT tests: RSA (made with `openssl`, as ring cannot
//! generate RSA keys), EC P-256/P-384 and Ed25519 key pairs made at run time, their public
//! halves as a JWKS, and tokens signed with jsonwebtoken, forged ones included.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
pub use jsonwebtoken::Algorithm;
use jsonwebtoken::{EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
    KeyPair,
};
use serde_json::{Value, json};

/// A private key and its JWK.
pub struct Signer {
    /// The `kid` its tokens and JWK carry.
    pub kid: String,
    /// The private key.
    pub key: EncodingKey,
    /// The public key as a JWK.
    pub jwk: Value,
    /// The public key's bytes as an attacker could find them (the JWK's text).
    pub public_bytes: Vec<u8>,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// An RSA key pair made with `openssl` (ring cannot generate RSA keys).
pub fn rsa(kid: &str, dir: &std::path::Path) -> Signer {
    let pem = dir.join(format!("{kid}.pem"));
    let der = dir.join(format!("{kid}.der"));
    let run = |args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running openssl: {e}"));
        assert!(out.status.success(), "openssl {args:?}: {:?}", out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&[
        "genrsa".as_ref(),
        "-traditional".as_ref(),
        "-out".as_ref(),
        pem.as_os_str(),
        "2048".as_ref(),
    ]);
    run(&[
        "rsa".as_ref(),
        "-in".as_ref(),
        pem.as_os_str(),
        "-traditional".as_ref(),
        "-outform".as_ref(),
        "DER".as_ref(),
        "-out".as_ref(),
        der.as_os_str(),
    ]);
    let modulus = run(&[
        "rsa".as_ref(),
        "-in".as_ref(),
        pem.as_os_str(),
        "-noout".as_ref(),
        "-modulus".as_ref(),
    ]);
    let hex = modulus.trim().trim_start_matches("Modulus=");
    let n: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    let der = std::fs::read(&der).expect("reading the DER key");
    let jwk = json!({"kty": "RSA", "kid": kid, "n": b64(&n), "e": "AQAB", "use": "sig"});
    Signer {
        kid: kid.into(),
        key: EncodingKey::from_rsa_der(&der),
        public_bytes: jwk.to_string().into_bytes(),
        jwk,
    }
}

/// An EC key pair on P-256 (`p384`: P-384).
pub fn ec(kid: &str, p384: bool) -> Signer {
    let rng = SystemRandom::new();
    let (alg, crv) = if p384 {
        (&ECDSA_P384_SHA384_FIXED_SIGNING, "P-384")
    } else {
        (&ECDSA_P256_SHA256_FIXED_SIGNING, "P-256")
    };
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("EC key");
    let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("EC key");
    let point = pair.public_key().as_ref();
    let half = (point.len() - 1) / 2;
    let jwk = json!({"kty": "EC", "kid": kid, "crv": crv,
        "x": b64(&point[1..=half]), "y": b64(&point[1 + half..])});
    Signer {
        kid: kid.into(),
        key: EncodingKey::from_ec_der(pkcs8.as_ref()),
        public_bytes: jwk.to_string().into_bytes(),
        jwk,
    }
}

/// An Ed25519 key pair.
pub fn ed25519(kid: &str) -> Signer {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("Ed25519 key");
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("Ed25519 key");
    let jwk = json!({"kty": "OKP", "kid": kid, "crv": "Ed25519",
        "x": b64(pair.public_key().as_ref())});
    Signer {
        kid: kid.into(),
        key: EncodingKey::from_ed_der(pkcs8.as_ref()),
        public_bytes: jwk.to_string().into_bytes(),
        jwk,
    }
}

/// A JWKS of `signers`' public keys.
pub fn jwks(signers: &[&Signer]) -> String {
    json!({"keys": signers.iter().map(|s| s.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Claims valid for an hour from issuer `https://idp.test` to audience `orders`.
pub fn claims(sub: &str) -> Value {
    json!({"sub": sub, "iss": "https://idp.test", "aud": "orders",
        "exp": now() + 3600, "iat": now(), "email": format!("{sub}@example.test"),
        "roles": ["reader"]})
}

/// `claims` signed by `signer` with `alg`, naming its kid.
pub fn token(signer: &Signer, alg: Algorithm, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(signer.kid.clone());
    jsonwebtoken::encode(&header, claims, &signer.key).expect("signing")
}

/// An unsigned token (`alg: none`) naming `kid`.
pub fn unsigned(kid: &str, claims: &Value) -> String {
    let header = json!({"alg": "none", "typ": "JWT", "kid": kid});
    format!(
        "{}.{}.",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

/// An HS256 token whose secret is `signer`'s public key bytes: the algorithm-confusion
/// attack on verifiers that take a public key as an HMAC secret.
pub fn hmac_with_public_key(signer: &Signer, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(signer.kid.clone());
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_secret(&signer.public_bytes),
    )
    .expect("signing")
}

/// `token` with its payload replaced by `claims` (the signature left as it was).
pub fn tampered(token: &str, claims: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    format!(
        "{}.{}.{}",
        parts[0],
        b64(claims.to_string().as_bytes()),
        parts[2]
    )
}
