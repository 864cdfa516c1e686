//! TLS termination settings of a listener: its certificates chosen by SNI, ALPN, and the
//! lowest protocol version, and the client certificates it verifies (mTLS). Every key is
//! checked against its certificate when the listener is built, so a mismatch is a startup
//! error naming both files, not a failed handshake. A client's failed handshake is
//! classified here ([`HandshakeFailure`]) for the metrics.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, ServerConfig, SupportedProtocolVersion};

use crate::config::{Alpn, Certificate, ClientVerifierError, Config, HostPattern, Tls, TlsVersion};

/// Why a listener's TLS settings could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The key could not be loaded (unsupported algorithm, corrupt file).
    #[error("certificate {name:?}: cannot use the key in {}: {source}", key.display())]
    Key {
        /// Certificate name.
        name: String,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        #[source]
        source: Box<rustls::Error>,
    },
    /// The key is not the certificate's.
    #[error(
        "certificate {name:?}: the key in {} does not match the certificate in {} ({source}); \
         check that both files belong to the same certificate",
        key.display(),
        cert.display()
    )]
    Mismatch {
        /// Certificate name.
        name: String,
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        #[source]
        source: Box<rustls::Error>,
    },
    /// A certificate id points nowhere (validation prevents this).
    #[error("certificate #{0} is not in the config")]
    Missing(usize),
    /// The client CA or CRLs cannot verify anything (validation prevents this).
    #[error(transparent)]
    ClientVerifier(#[from] ClientVerifierError),
    /// rustls refused the settings.
    #[error("TLS settings: {0}")]
    Settings(#[source] Box<rustls::Error>),
}

/// Why a client's TLS handshake failed, as `sluice_l7_tls_handshake_failures_total` counts
/// it: the client certificate refusals of mTLS by cause, then everything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// `client_auth = "required"` and the client sent no certificate.
    NoCertificate,
    /// The certificate does not chain to `client_ca` (a foreign CA).
    UnknownCa,
    /// It names `client_ca` as issuer but the signature does not verify (forged).
    BadSignature,
    /// Past its `notAfter`.
    Expired,
    /// Before its `notBefore`.
    NotYetValid,
    /// Listed in `client_crl`.
    Revoked,
    /// Refused for another reason (not for client use, bad encoding, ...).
    BadCertificate,
    /// Not finished within the listener's `header_read_timeout`.
    Timeout,
    /// Any other failure: the client hung up, spoke something else, or refused our certificate.
    Other,
}

impl HandshakeFailure {
    /// Every reason, in the order [`Self::index`] counts them.
    pub const ALL: [Self; 9] = [
        Self::NoCertificate,
        Self::UnknownCa,
        Self::BadSignature,
        Self::Expired,
        Self::NotYetValid,
        Self::Revoked,
        Self::BadCertificate,
        Self::Timeout,
        Self::Other,
    ];

    /// The failure behind the error `tokio_rustls` returned from `accept`.
    pub fn of(err: &io::Error) -> Self {
        let rustls = err
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        match rustls {
            Some(rustls::Error::NoCertificatesPresented) => Self::NoCertificate,
            Some(rustls::Error::InvalidCertificate(cert)) => match cert {
                CertificateError::UnknownIssuer => Self::UnknownCa,
                CertificateError::BadSignature => Self::BadSignature,
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    Self::Expired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    Self::NotYetValid
                }
                CertificateError::Revoked => Self::Revoked,
                _ => Self::BadCertificate,
            },
            _ => Self::Other,
        }
    }

    /// Its position in [`Self::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The metric's `reason` label.
    pub fn reason(self) -> &'static str {
        match self {
            Self::NoCertificate => "no_certificate",
            Self::UnknownCa => "unknown_ca",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::Revoked => "revoked",
            Self::BadCertificate => "bad_certificate",
            Self::Timeout => "timeout",
            Self::Other => "other",
        }
    }
}

/// The rustls server settings for `tls`, with every certificate's key checked.
pub fn server_config(tls: &Tls, config: &Config) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut certificates = Vec::with_capacity(tls.certificates.len());
    for id in &tls.certificates {
        let cert = config.certificate(*id).ok_or(TlsError::Missing(id.0))?;
        certificates.push((cert, certified_key(cert, &provider)?));
    }
    let resolver = SniResolver::new(certificates).ok_or(TlsError::Missing(0))?;
    let versions: &[&'static SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Settings(Box::new(e)))?;
    let builder = match &tls.client_auth {
        Some(client_auth) => builder.with_client_cert_verifier(client_auth.verifier()?),
        None => builder.with_no_client_auth(),
    };
    let mut server = builder.with_cert_resolver(Arc::new(resolver));
    server.alpn_protocols = tls
        .alpn
        .iter()
        .map(|a| match a {
            Alpn::H2 => b"h2".to_vec(),
            Alpn::Http11 => b"http/1.1".to_vec(),
        })
        .collect();
    Ok(Arc::new(server))
}

/// The certificate's chain with its key, after checking that they belong together.
fn certified_key(
    cert: &Certificate,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let signing_key = provider
        .key_provider
        .load_private_key(cert.key.0.clone_key())
        .map_err(|source| TlsError::Key {
            name: cert.name.clone(),
            key: cert.key_path.clone(),
            source: Box::new(source),
        })?;
    let certified = CertifiedKey::new(cert.chain.clone(), signing_key);
    certified
        .keys_match()
        .map_err(|source| TlsError::Mismatch {
            name: cert.name.clone(),
            cert: cert.cert_path.clone(),
            key: cert.key_path.clone(),
            source: Box::new(source),
        })?;
    Ok(Arc::new(certified))
}

/// Chooses a certificate by SNI: exact name, then the longest `*.` suffix, then the first
/// certificate listed (also when the client sends no SNI).
#[derive(Debug)]
pub struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    suffixes: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    /// A resolver over `certificates` in listing order; `None` when the list is empty.
    pub fn new(certificates: Vec<(&Certificate, Arc<CertifiedKey>)>) -> Option<Self> {
        let default = certificates.first()?.1.clone();
        let mut exact = HashMap::new();
        let mut suffixes = HashMap::new();
        for (cert, key) in certificates {
            for name in &cert.server_names {
                // The first certificate listed for a name keeps it.
                match name {
                    HostPattern::Exact(n) => exact.entry(n.clone()).or_insert_with(|| key.clone()),
                    HostPattern::Suffix(s) => {
                        suffixes.entry(s.clone()).or_insert_with(|| key.clone())
                    }
                    HostPattern::Any => continue,
                };
            }
        }
        Some(Self {
            exact,
            suffixes,
            default,
        })
    }

    /// The certificate for SNI `name` (or the default for `None`).
    pub fn choose(&self, name: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(name) = name else {
            return &self.default;
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(key) = self.exact.get(&name) {
            return key;
        }
        for (dot, _) in name.match_indices('.') {
            if dot > 0
                && let Some(key) = self.suffixes.get(&name[dot + 1..])
            {
                return key;
            }
        }
        &self.default
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.choose(hello.server_name()).clone())
    }
}

#[cfg(test)]
mod tests {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    use super::*;
    use crate::config::PrivateKey;

    fn generated(name: &str, sans: &[&str]) -> (Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().expect("key");
        let params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        let cert = params.self_signed(&key).expect("self-signed");
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let patterns = sans
            .iter()
            .map(|s| match s.strip_prefix("*.") {
                Some(suffix) => HostPattern::Suffix(suffix.into()),
                None => HostPattern::Exact(s.to_string()),
            })
            .collect();
        let certificate = Certificate {
            name: name.into(),
            cert_path: format!("/certs/{name}.crt").into(),
            key_path: format!("/certs/{name}.key").into(),
            server_names: patterns,
            chain: vec![CertificateDer::from(cert.der().to_vec())],
            key: PrivateKey(Arc::new(der)),
        };
        (certificate, key)
    }

    fn leaf(key: &CertifiedKey) -> Vec<u8> {
        key.cert[0].to_vec()
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_the_first() {
        let provider = rustls::crypto::ring::default_provider();
        let (a, _) = generated("a", &["a.test"]);
        let (b, _) = generated("b", &["b.test", "*.b.test"]);
        let (c, _) = generated("c", &["x.b.test"]);
        let keys: Vec<_> = [&a, &b, &c]
            .iter()
            .map(|cert| certified_key(cert, &provider).expect("keys match"))
            .collect();
        let resolver = SniResolver::new(vec![
            (&a, keys[0].clone()),
            (&b, keys[1].clone()),
            (&c, keys[2].clone()),
        ])
        .expect("resolver");
        assert_eq!(leaf(resolver.choose(Some("a.test"))), leaf(&keys[0]));
        assert_eq!(leaf(resolver.choose(Some("B.TEST"))), leaf(&keys[1]));
        assert_eq!(leaf(resolver.choose(Some("www.b.test"))), leaf(&keys[1]));
        assert_eq!(leaf(resolver.choose(Some("x.b.test"))), leaf(&keys[2]));
        assert_eq!(leaf(resolver.choose(Some("unknown.test"))), leaf(&keys[0]));
        assert_eq!(leaf(resolver.choose(None)), leaf(&keys[0]));
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_naming_both_files() {
        let provider = rustls::crypto::ring::default_provider();
        let (mut a, _) = generated("site", &["a.test"]);
        let (b, _) = generated("other", &["b.test"]);
        a.key = b.key.clone();
        let err = certified_key(&a, &provider).expect_err("mismatch");
        let text = err.to_string();
        assert!(
            text.contains("/certs/site.crt") && text.contains("/certs/site.key"),
            "{text}"
        );
        assert!(matches!(err, TlsError::Mismatch { .. }));
    }

    #[test]
    fn handshake_failures_are_told_apart_by_cause() {
        let failure = |err: rustls::Error| {
            HandshakeFailure::of(&io::Error::new(io::ErrorKind::InvalidData, err))
        };
        let cert = |err: CertificateError| failure(rustls::Error::InvalidCertificate(err));
        assert_eq!(
            failure(rustls::Error::NoCertificatesPresented),
            HandshakeFailure::NoCertificate
        );
        assert_eq!(
            cert(CertificateError::UnknownIssuer),
            HandshakeFailure::UnknownCa
        );
        assert_eq!(
            cert(CertificateError::BadSignature),
            HandshakeFailure::BadSignature
        );
        assert_eq!(cert(CertificateError::Expired), HandshakeFailure::Expired);
        assert_eq!(
            cert(CertificateError::NotValidYet),
            HandshakeFailure::NotYetValid
        );
        assert_eq!(cert(CertificateError::Revoked), HandshakeFailure::Revoked);
        assert_eq!(
            cert(CertificateError::InvalidPurpose),
            HandshakeFailure::BadCertificate
        );
        assert_eq!(
            failure(rustls::Error::HandshakeNotComplete),
            HandshakeFailure::Other
        );
        let hung_up = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(HandshakeFailure::of(&hung_up), HandshakeFailure::Other);
        for (i, failure) in HandshakeFailure::ALL.into_iter().enumerate() {
            assert_eq!(failure.index(), i, "{}", failure.reason());
        }
    }
}
