//! Certificates made at run time: a test CA, leaf certificates it signs (written as PEM
//! files for the agent's config), and rustls client settings that trust it.

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use rustls_pki_types::CertificateDer;

/// A CA and the folder its certificates are written to.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: tempfile::TempDir,
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
    /// A fresh CA.
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new())
            .unwrap_or_else(|e| panic!("CA params: {e}"));
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
