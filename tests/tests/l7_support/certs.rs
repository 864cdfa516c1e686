//! Certificates made at run time: a test CA, leaf certificates it signs (written as PEM
//! files for the agent's config), client certificates and revocation lists for mTLS, and
//! rustls client settings that trust it.

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer, DnType,
    IsCa, KeyIdMethod, KeyPair, RevokedCertParams, SanType, SerialNumber, date_time_ymd,
};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A CA and the folder its certificates are written to.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: tempfile::TempDir,
}

/// A client certificate, kept in memory: clients present it, the agent never reads it.
pub struct ClientCert {
    /// The certificate.
    pub der: CertificateDer<'static>,
    /// Its key.
    pub key: PrivatePkcs8KeyDer<'static>,
}

/// A leaf certificate written to disk.
pub struct Leaf {
    /// PEM chain file.
    pub cert: PathBuf,
    /// PEM key file.
    pub key: PathBuf,
    /// The certificate, to compare with what a handshake presents.
    pub der: CertificateDer<'static>,
}

impl TestCa {
    /// A fresh CA (rcgen's default name).
    pub fn new() -> TestCa {
        Self::with_name(None)
    }

    /// A fresh CA named `CN=<name>`, so that it is not mistaken for another test CA.
    pub fn named(name: &str) -> TestCa {
        Self::with_name(Some(name))
    }

    fn with_name(name: Option<&str>) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new())
            .unwrap_or_else(|e| panic!("CA params: {e}"));
        if let Some(name) = name {
            params.distinguished_name = rcgen::DistinguishedName::new();
            params.distinguished_name.push(DnType::CommonName, name);
        }
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("CA key: {e}"));
        let issuer =
            CertifiedIssuer::self_signed(params, key).unwrap_or_else(|e| panic!("CA cert: {e}"));
        let dir = tempfile::Builder::new()
            .prefix("sluice-certs-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir: {e}"));
        TestCa { issuer, dir }
    }

    /// Issues a certificate for `names` and writes `<file>.crt` and `<file>.key`.
    pub fn issue(&self, file: &str, names: &[&str]) -> Leaf {
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap_or_else(|e| panic!("leaf params: {e}"));
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("leaf key: {e}"));
        let cert = params
            .signed_by(&key, &self.issuer)
            .unwrap_or_else(|e| panic!("signing: {e}"));
        let (cert_path, key_path) = (
            self.path(&format!("{file}.crt")),
            self.path(&format!("{file}.key")),
        );
        write(&cert_path, &cert.pem());
        write(&key_path, &key.serialize_pem());
        Leaf {
            cert: cert_path,
            key: key_path,
            der: cert.der().clone(),
        }
    }

    /// Issues a client certificate with common name `cn`, `dns` and `uri` SANs and serial
    /// `serial`; an `expired` one was valid only in 2020.
    pub fn issue_client(
        &self,
        cn: &str,
        dns: &str,
        uri: &str,
        serial: u64,
        expired: bool,
    ) -> ClientCert {
        let mut params = CertificateParams::new(vec![dns.to_string()])
            .unwrap_or_else(|e| panic!("client params: {e}"));
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names.push(SanType::URI(
            uri.try_into().unwrap_or_else(|e| panic!("URI SAN: {e}")),
        ));
        params.serial_number = Some(SerialNumber::from(serial));
        if expired {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2020, 12, 31);
        }
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("client key: {e}"));
        let cert = params
            .signed_by(&key, &self.issuer)
            .unwrap_or_else(|e| panic!("signing: {e}"));
        ClientCert {
            der: cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        }
    }

    /// Writes the CA certificate to `file` (a `client_ca` bundle).
    pub fn write_ca(&self, file: &str) -> PathBuf {
        let path = self.path(file);
        write(&path, &self.issuer.pem());
        path
    }

    /// Writes a CRL of this CA revoking `serials` to `file`.
    pub fn write_crl(&self, file: &str, serials: &[u64]) -> PathBuf {
        let params = CertificateRevocationListParams {
            this_update: date_time_ymd(2024, 1, 1),
            next_update: date_time_ymd(2099, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: SerialNumber::from(*serial),
                    revocation_time: date_time_ymd(2024, 1, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params
            .signed_by(&self.issuer)
            .unwrap_or_else(|e| panic!("signing the CRL: {e}"));
        let path = self.path(file);
        write(&path, &crl.pem().unwrap_or_else(|e| panic!("CRL PEM: {e}")));
        path
    }

    /// Client settings trusting this CA and presenting `cert` (from any CA), HTTP/1.1.
    pub fn client_presenting(
        &self,
        cert: &ClientCert,
        versions: &[&'static SupportedProtocolVersion],
    ) -> Arc<ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap_or_else(|e| panic!("client versions: {e}"))
            .with_root_certificates(self.roots())
            .with_client_auth_cert(
                vec![cert.der.clone()],
                PrivateKeyDer::Pkcs8(cert.key.clone_key()),
            )
            .unwrap_or_else(|e| panic!("client certificate: {e}"));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// Server settings presenting `leaf` (a test's own TLS server), HTTP/1.1.
    pub fn server_presenting(&self, leaf: &Leaf) -> Arc<rustls::ServerConfig> {
        use rustls_pki_types::pem::PemObject;
        let key = PrivateKeyDer::from_pem_file(&leaf.key)
            .unwrap_or_else(|e| panic!("reading {}: {e}", leaf.key.display()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|e| panic!("server versions: {e}"))
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der.clone()], key)
            .unwrap_or_else(|e| panic!("server certificate: {e}"));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.issuer.der().clone())
            .unwrap_or_else(|e| panic!("adding the CA: {e}"));
        roots
    }

    /// A path in the CA's folder.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// Client settings trusting this CA, offering `alpn`, limited to `versions`.
    pub fn client(
        &self,
        alpn: &[&str],
        versions: &[&'static SupportedProtocolVersion],
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.issuer.der().clone())
            .unwrap_or_else(|e| panic!("adding the CA: {e}"));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap_or_else(|e| panic!("client versions: {e}"))
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Arc::new(config)
    }
}

fn write(path: &PathBuf, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// A `[[certificate]]` table for `leaf`.
pub fn certificate(name: &str, leaf: &Leaf, server_names: &[&str]) -> String {
    let names: Vec<String> = server_names.iter().map(|n| format!("\"{n}\"")).collect();
    format!(
        "[[certificate]]\nname = \"{name}\"\ncert = \"{}\"\nkey = \"{}\"\nserver_names = [{}]\n",
        leaf.cert.display(),
        leaf.key.display(),
        names.join(", ")
    )
}
