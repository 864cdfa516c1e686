//! `[[certificate]]`: names, server names, and PEM files that must load.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use toml::Spanned;

use super::check;
use crate::config::diagnostic::Reporter;
use crate::config::file;
use crate::config::model::{Certificate, PrivateKey};

pub(super) fn certificates(
    items: &[Spanned<file::Certificate>],
    base_dir: &Path,
    r: &mut Reporter,
) -> Option<Vec<Certificate>> {
    check::unique_names(
        items
            .iter()
            .map(|c| (&c.get_ref().name, context(c.get_ref()))),
        "certificate",
        r,
    );
    let checked: Vec<_> = items
        .iter()
        .map(|item| certificate(item.get_ref(), base_dir, r))
        .collect();
    checked.into_iter().collect()
}

fn context(cert: &file::Certificate) -> String {
    format!("certificate {:?}", cert.name.get_ref())
}

fn certificate(item: &file::Certificate, base_dir: &Path, r: &mut Reporter) -> Option<Certificate> {
    let ctx = context(item);
    let name = check::name(&item.name, "name", &ctx, r);
    let chain = load_chain(&item.cert, base_dir, &ctx, r);
    let key = load_key(&item.key, base_dir, &ctx, r);
    let server_names: Vec<_> = item
        .server_names
        .iter()
        .map(|n| check::host_pattern(n, false, &ctx, r))
        .collect();
    let (cert_path, chain) = chain?;
    let (key_path, key) = key?;
    if let Err(mismatch) = key_matches(&chain, &key) {
        let (key, cert) = (key_path.display(), cert_path.display());
        let message = match mismatch {
            KeyMismatch::Unusable(err) => {
                format!("key {key} cannot be used ({err}) with certificate {cert}")
            }
            KeyMismatch::Different => format!("key {key} does not match certificate {cert}"),
            KeyMismatch::Uncheckable(err) => {
                format!("key {key} cannot be checked ({err}) against certificate {cert}")
            }
        };
        r.error_in(&item.key.span(), &ctx, message);
        return None;
    }
    Some(Certificate {
        name: name?,
        cert_path,
        key_path,
        server_names: server_names.into_iter().collect::<Option<_>>()?,
        chain,
        key: PrivateKey(Arc::new(key)),
    })
}

/// Why a key cannot serve a certificate chain.
#[derive(Debug, thiserror::Error)]
enum KeyMismatch {
    /// rustls cannot sign with the key.
    #[error("the key cannot be used: {0}")]
    Unusable(#[source] rustls::Error),
    /// The key is not the leaf certificate's.
    #[error("the key does not match the certificate")]
    Different,
    /// rustls could not compare them.
    #[error("the key cannot be checked against the certificate: {0}")]
    Uncheckable(#[source] rustls::Error),
}

/// Whether `key` is the private key of the chain's leaf certificate, as TLS will need it.
fn key_matches(
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
) -> Result<(), KeyMismatch> {
    let provider = rustls::crypto::ring::default_provider();
    let signing_key = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(KeyMismatch::Unusable)?;
    let certified = rustls::sign::CertifiedKey::new(chain.to_vec(), signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(()),
        // The key type cannot tell its public key: TLS would find out at the handshake.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(()),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(KeyMismatch::Different)
        }
        Err(err) => Err(KeyMismatch::Uncheckable(err)),
    }
}

fn load_chain(
    value: &Spanned<String>,
    base_dir: &Path,
    ctx: &str,
    r: &mut Reporter,
) -> Option<(std::path::PathBuf, Vec<CertificateDer<'static>>)> {
    let path = check::existing_file(value, base_dir, "cert", ctx, r)?;
    let chain =
        CertificateDer::pem_file_iter(&path).and_then(|certs| certs.collect::<Result<Vec<_>, _>>());
    match chain {
        Ok(chain) if !chain.is_empty() => Some((path, chain)),
        Ok(_) => {
            r.error_in(
                &value.span(),
                ctx,
                format!("cert {} holds no PEM CERTIFICATE block", path.display()),
            );
            None
        }
        Err(err) => {
            r.error_in(
                &value.span(),
                ctx,
                format!("cert {} is not valid PEM: {err}", path.display()),
            );
            None
        }
    }
}

fn load_key(
    value: &Spanned<String>,
    base_dir: &Path,
    ctx: &str,
    r: &mut Reporter,
) -> Option<(std::path::PathBuf, PrivateKeyDer<'static>)> {
    let path = check::existing_file(value, base_dir, "key", ctx, r)?;
    match PrivateKeyDer::from_pem_file(&path) {
        Ok(key) => Some((path, key)),
        Err(rustls_pki_types::pem::Error::NoItemsFound) => {
            r.error_in(
                &value.span(),
                ctx,
                format!("key {} holds no PEM private key block", path.display()),
            );
            None
        }
        Err(err) => {
            r.error_in(
                &value.span(),
                ctx,
                format!("key {} is not valid PEM: {err}", path.display()),
            );
            None
        }
    }
}
