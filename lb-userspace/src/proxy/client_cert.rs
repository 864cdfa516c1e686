//! The identity of a verified client certificate (mTLS): its subject and subject
//! alternative names as one line, in the `x-forwarded-client-cert` style
//! (`Subject="CN=alice, O=Example";DNS=alice.example;URI=spiffe://example/alice`). It is
//! the request's principal and the value of the listener's `client_cert_header`.

use std::fmt::Write;
use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderValue;
use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

/// Who a connection's verified client certificate names.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    /// The principal requests on the connection start with.
    pub principal: Arc<str>,
    /// The same text, ready for the forwarded header.
    pub header: HeaderValue,
}

impl ClientIdentity {
    /// The identity in `leaf`; `None` when it cannot be parsed (rustls verified it, so this
    /// is a certificate x509-parser cannot read).
    pub fn of(leaf: &CertificateDer<'_>) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
        let mut text = String::with_capacity(128);
        push_field(&mut text, "Subject", &cert.subject().to_string(), true);
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(dns) => push_field(&mut text, "DNS", dns, false),
                    GeneralName::URI(uri) => push_field(&mut text, "URI", uri, false),
                    GeneralName::RFC822Name(mail) => push_field(&mut text, "Email", mail, false),
                    GeneralName::IPAddress(bytes) => {
                        if let Some(ip) = ip_address(bytes) {
                            push_field(&mut text, "IP", &ip.to_string(), false);
                        }
                    }
                    _ => {}
                }
            }
        }
        // Every byte is visible ASCII by construction, so this cannot fail.
        let header = HeaderValue::from_str(&text).ok()?;
        Some(Self {
            principal: text.into(),
            header,
        })
    }
}

fn ip_address(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

/// Appends `;key=value`, the value quoted when asked or when it holds a separator, and
/// every byte outside visible ASCII escaped (`\u{e9}`), so the line is one header value a
/// certificate cannot split into fields it did not have.
fn push_field(out: &mut String, key: &str, value: &str, quote: bool) {
    if !out.is_empty() {
        out.push(';');
    }
    out.push_str(key);
    out.push('=');
    let quote = quote
        || value
            .chars()
            .any(|c| matches!(c, ',' | ';' | '=' | '"' | '\\' | ' '));
    if quote {
        out.push('"');
    }
    for c in value.chars() {
        match c {
            '"' | '\\' if quote => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            other => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(other));
            }
        }
    }
    if quote {
        out.push('"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_and_sans_become_one_escaped_line() {
        let mut params =
            rcgen::CertificateParams::new(vec!["alice.example".to_owned(), "10.0.0.1".to_owned()])
                .expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice \"the\" é");
        params.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://example/alice;x=1".try_into().expect("uri"),
        ));
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        let identity = ClientIdentity::of(cert.der()).expect("identity");
        assert_eq!(
            &*identity.principal,
            "Subject=\"CN=alice \\\"the\\\" \\u{e9}\";DNS=alice.example;IP=10.0.0.1;\
             URI=\"spiffe://example/alice;x=1\""
        );
        assert_eq!(identity.header.as_bytes(), identity.principal.as_bytes());
        assert!(ClientIdentity::of(&CertificateDer::from(vec![1, 2, 3])).is_none());
    }
}
