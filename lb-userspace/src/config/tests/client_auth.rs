//! `[service.l7.tls]` client certificates: defaults, keys that need `client_ca`, and files
//! that do not load, each an error at its line naming the file.

use std::path::{Path, PathBuf};

use super::rules::VHOST;
use crate::config::{ClientAuthMode, ServiceKind, parse};

/// A folder with a server certificate, a CA bundle, its CRL and a file that is no PEM.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, body: &str| {
            std::fs::write(dir.path().join(name), body).expect("write");
        };
        let site = rcgen::generate_simple_self_signed(vec!["a.test".to_owned()]).expect("cert");
        write("site.crt", &site.cert.pem());
        write("site.key", &site.signing_key.serialize_pem());
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().expect("key");
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key).expect("CA");
        write("ca.pem", &issuer.pem());
        let crl = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2024, 1, 1),
            next_update: rcgen::date_time_ymd(2099, 1, 1),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: Vec::new(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&issuer)
        .expect("CRL");
        write("ca.crl", &crl.pem().expect("CRL PEM"));
        write("junk.pem", "not PEM at all\n");
        write(
            "broken.crl",
            "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
        );
        Files { dir }
    }

    fn origin(&self) -> PathBuf {
        self.dir.path().join("sluice.toml")
    }

    /// A TLS service whose `[service.l7.tls]` table ends with `tls` (from line 15 on).
    fn config(&self, tls: &str) -> String {
        format!(
            "[[certificate]]\nname = \"site\"\ncert = \"site.crt\"\nkey = \"site.key\"\n\
             [[pool]]\nname = \"p\"\nbackend = [{{ address = \"10.0.0.1\", port = 80 }}]\n\
             [[service]]\nname = \"s\"\nvip = \"192.0.2.1\"\nport = 443\nprotocol = \"tcp\"\n\
             [service.l7.tls]\ncertificates = [\"site\"]\n{tls}\n{VHOST}"
        )
    }

    fn errors(&self, tls: &str) -> Vec<String> {
        match parse(&self.config(tls), &self.origin()) {
            Ok(_) => panic!("{tls:?} validated"),
            Err(errs) => errs.diagnostics.iter().map(|d| d.to_string()).collect(),
        }
    }
}

fn tls(loaded: &crate::config::Loaded) -> &crate::config::Tls {
    match &loaded.config.services[0].kind {
        ServiceKind::L7(l7) => l7.tls.as_ref().expect("tls"),
        ServiceKind::L4(_) => panic!("an l7 service"),
    }
}

#[test]
fn client_certificates_are_required_by_default_once_a_ca_is_given() {
    let files = Files::new();
    let loaded = parse(&files.config(""), &files.origin()).expect("valid");
    assert!(tls(&loaded).client_auth.is_none());
    let loaded = parse(
        &files.config(
            "client_ca = \"ca.pem\"\nclient_crl = \"ca.crl\"\nclient_cert_header = \"X-Client-Cert\"",
        ),
        &files.origin(),
    )
    .expect("valid");
    let auth = tls(&loaded).client_auth.as_ref().expect("client auth");
    assert_eq!(auth.mode, ClientAuthMode::Required);
    assert_eq!(auth.roots.len(), 1);
    assert_eq!(auth.crls.len(), 1);
    assert_eq!(auth.header.as_deref(), Some("x-client-cert"));
    assert!(auth.ca_path.ends_with("ca.pem"));
    let loaded = parse(
        &files.config("client_ca = \"ca.pem\"\nclient_auth = \"optional\""),
        &files.origin(),
    )
    .expect("valid");
    let auth = tls(&loaded).client_auth.as_ref().expect("client auth");
    assert_eq!(auth.mode, ClientAuthMode::Optional);
    assert!(auth.crls.is_empty() && auth.header.is_none());
}

#[test]
fn client_auth_settings_without_a_ca_are_errors() {
    let files = Files::new();
    let errs = files.errors(
        "client_auth = \"optional\"\nclient_crl = \"ca.crl\"\nclient_cert_header = \"x-cert\"",
    );
    assert_eq!(errs.len(), 3, "{errs:?}");
    for (err, (line, key)) in errs.iter().zip([
        (15, "client_auth"),
        (16, "client_crl"),
        (17, "client_cert_header"),
    ]) {
        assert!(err.contains(&format!(":{line}:")), "{err}");
        assert!(
            err.contains(&format!("tls.{key} needs tls.client_ca")),
            "{err}"
        );
    }
}

#[test]
fn client_ca_and_crl_files_that_do_not_load_are_errors_naming_them() {
    let files = Files::new();
    let dir = files.dir.path();
    let named = |errs: Vec<String>, file: &Path, what: &str| {
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains(&file.display().to_string()), "{errs:?}");
        assert!(errs[0].contains(what), "{errs:?}");
    };
    named(
        files.errors("client_ca = \"junk.pem\""),
        &dir.join("junk.pem"),
        "holds no PEM CERTIFICATE block",
    );
    named(
        files.errors("client_ca = \"missing.pem\""),
        &dir.join("missing.pem"),
        "tls.client_ca",
    );
    named(
        files.errors("client_ca = \"ca.pem\"\nclient_crl = \"junk.pem\""),
        &dir.join("junk.pem"),
        "holds no PEM X509 CRL block",
    );
    named(
        files.errors("client_ca = \"ca.pem\"\nclient_crl = \"broken.crl\""),
        &dir.join("broken.crl"),
        "client certificate settings",
    );
    let errs = files.errors("client_ca = \"ca.pem\"\nclient_cert_header = \"Host\"");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("cannot be \"host\""), "{errs:?}");
}
