//! `[service.l7.tls]` client certificates (mTLS): the CA bundle and the CRL file must load,
//! and rustls must accept them as the handshake will, so a bad file is a config error that
//! names it (and a reload with one keeps the running config).

use std::path::{Path, PathBuf};

use rustls_pki_types::CertificateRevocationListDer;
use rustls_pki_types::pem::PemObject;
use toml::Spanned;

use super::check;
use crate::config::diagnostic::Reporter;
use crate::config::file;
use crate::config::model::{ClientAuth, ClientAuthMode};

/// Request headers the identity may not be put in: the proxy or the backend reads them as
/// framing or routing.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "connection",
    "content-length",
    "transfer-encoding",
    "te",
    "upgrade",
    "keep-alive",
    "proxy-connection",
    "trailer",
];

/// The listener's client-certificate settings: `Some(None)` when it asks for none, `None`
/// when they are invalid (reported).
pub(super) fn client_auth(
    t: &file::Tls,
    base_dir: &Path,
    ctx: &str,
    r: &mut Reporter,
) -> Option<Option<ClientAuth>> {
    let Some(ca) = &t.client_ca else {
        let strays = [
            t.client_auth.as_ref().map(|v| (v.span(), "client_auth")),
            t.client_crl.as_ref().map(|v| (v.span(), "client_crl")),
            t.client_cert_header
                .as_ref()
                .map(|v| (v.span(), "client_cert_header")),
        ];
        let mut fine = true;
        for (span, key) in strays.into_iter().flatten() {
            r.error_in(
                &span,
                ctx,
                format!("tls.{key} needs tls.client_ca (the CA client certificates are verified against)"),
            );
            fine = false;
        }
        return fine.then_some(None);
    };
    let roots = check::ca_bundle(ca, base_dir, "tls.client_ca", ctx, r);
    let crls = match &t.client_crl {
        Some(crl) => load_crls(crl, base_dir, ctx, r).map(|(path, crls)| (Some(path), crls)),
        None => Some((None, Vec::new())),
    };
    let header = match &t.client_cert_header {
        Some(name) => header(name, ctx, r).map(Some),
        None => Some(None),
    };
    let (ca_path, roots) = roots?;
    let (crl_path, crls) = crls?;
    let settings = ClientAuth {
        ca_path,
        roots,
        mode: t
            .client_auth
            .as_ref()
            .map_or(ClientAuthMode::Required, |m| *m.get_ref()),
        crl_path,
        crls,
        header: header?,
    };
    if let Err(err) = settings.verifier() {
        let span = match (&t.client_crl, &err) {
            (Some(crl), crate::config::model::ClientVerifierError::Verifier { .. }) => crl.span(),
            _ => ca.span(),
        };
        r.error_in(&span, ctx, err.to_string());
        return None;
    }
    Some(Some(settings))
}

fn load_crls(
    value: &Spanned<String>,
    base_dir: &Path,
    ctx: &str,
    r: &mut Reporter,
) -> Option<(PathBuf, Vec<CertificateRevocationListDer<'static>>)> {
    let path = check::existing_file(value, base_dir, "tls.client_crl", ctx, r)?;
    let crls = CertificateRevocationListDer::pem_file_iter(&path)
        .and_then(|crls| crls.collect::<Result<Vec<_>, _>>());
    match crls {
        Ok(crls) if !crls.is_empty() => Some((path, crls)),
        Ok(_) => {
            r.error_in(
                &value.span(),
                ctx,
                format!(
                    "tls.client_crl {} holds no PEM X509 CRL block",
                    path.display()
                ),
            );
            None
        }
        Err(err) => {
            r.error_in(
                &value.span(),
                ctx,
                format!("tls.client_crl {} is not valid PEM: {err}", path.display()),
            );
            None
        }
    }
}

fn header(name: &Spanned<String>, ctx: &str, r: &mut Reporter) -> Option<String> {
    let lower = check::header_name(name, ctx, r)?;
    if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with(':') {
        r.error_in(
            &name.span(),
            ctx,
            format!("tls.client_cert_header cannot be {lower:?}, a header that frames or routes the request"),
        );
        return None;
    }
    Some(lower)
}
