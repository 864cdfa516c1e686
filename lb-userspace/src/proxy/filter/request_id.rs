//! `request_id`: every request carries an id (`x-request-id` by default) and a W3C trace
//! context (`traceparent`), both logged and passed to the backend. A client's id is kept,
//! replaced or refused as configured; a valid `traceparent` is kept, anything else starts a
//! new trace.

use bytes::Bytes;
use http::header::Entry;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::build::FilterBuildError;
use super::headers::header_name;
use super::{Deny, Filter, FilterRequest, Learned, Verdict};
use crate::config::{ClientIds, RequestIdSpec};

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The longest client-sent id kept.
const MAX_ID_LEN: usize = 200;

/// The compiled `request_id` filter.
#[derive(Debug)]
pub struct RequestIdFilter {
    header: HeaderName,
    client: ClientIds,
    traceparent: bool,
    echo: bool,
}

impl RequestIdFilter {
    /// Compiles `spec`.
    pub fn new(spec: &RequestIdSpec) -> Result<Self, FilterBuildError> {
        Ok(Self {
            header: header_name(&spec.header)?,
            client: spec.client,
            traceparent: spec.traceparent,
            echo: spec.echo,
        })
    }
}

impl Filter for RequestIdFilter {
    fn on_request(&self, request: &mut FilterRequest<'_>) -> Verdict {
        // One lookup per header (the entry API), not a look and then an insert.
        let id = match request.headers.entry(self.header.clone()) {
            Entry::Occupied(_) if self.client == ClientIds::Refuse => {
                return Verdict::Deny(Deny {
                    status: StatusCode::BAD_REQUEST,
                    reason: "client_id",
                    body: None,
                    headers: Vec::new(),
                });
            }
            Entry::Occupied(sent)
                if self.client == ClientIds::Keep && is_acceptable_id(sent.get()) =>
            {
                sent.get().clone()
            }
            Entry::Occupied(mut sent) => {
                let id = generated_id();
                sent.insert(id.clone());
                id
            }
            Entry::Vacant(slot) => slot.insert(generated_id()).clone(),
        };
        request.learned.request_id = Some(id);
        if self.traceparent {
            let trace = match request.headers.entry(TRACEPARENT.clone()) {
                Entry::Occupied(kept) if is_valid_traceparent(kept.get().as_bytes()) => {
                    kept.get().clone()
                }
                entry => {
                    let trace = new_traceparent();
                    match entry {
                        Entry::Occupied(mut broken) => {
                            broken.insert(trace.clone());
                        }
                        Entry::Vacant(slot) => {
                            slot.insert(trace.clone());
                        }
                    }
                    // A broken or absent trace context is dropped whole (W3C Trace Context
                    // §3.3).
                    request.headers.remove(&TRACESTATE);
                    trace
                }
            };
            request.learned.traceparent = Some(trace);
        }
        Verdict::Continue
    }

    fn on_response(&self, headers: &mut HeaderMap, learned: &Learned) {
        if self.echo
            && let Some(id) = &learned.request_id
        {
            headers.insert(self.header.clone(), id.clone());
        }
    }
}

/// A client id worth keeping: short, visible ASCII, no separators a log could be fooled by.
fn is_acceptable_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_ID_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\' | b','))
}

/// A random (version 4) UUID.
fn generated_id() -> HeaderValue {
    let bits = (fastrand::u128(..) & !(0xf000 << 64) | (0x4000 << 64)) & !(0xc << 60) | (0x8 << 60);
    let mut text = [b'-'; 36];
    let mut hex = [0; 32];
    lower_hex(&mut hex, bits);
    // 8-4-4-4-12 hex digits.
    for (digits, at) in [
        (0..8, 0),
        (8..12, 9),
        (12..16, 14),
        (16..20, 19),
        (20..32, 24),
    ] {
        let len = digits.len();
        text[at..at + len].copy_from_slice(&hex[digits]);
    }
    header_value(text)
}

/// `value`'s digits in lower-case hex, zero-padded to `out`'s length (formatting through
/// `format!` cost more than every other filter in the chain together).
fn lower_hex(out: &mut [u8], mut value: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    // Two digits a step: `out`'s length is even in every use here.
    let mut pairs = out.rchunks_exact_mut(2);
    for pair in &mut pairs {
        let byte = (value & 0xff) as usize;
        pair[0] = DIGITS[byte >> 4];
        pair[1] = DIGITS[byte & 0xf];
        value >>= 8;
    }
    if let [digit] = pairs.into_remainder() {
        *digit = DIGITS[(value & 0xf) as usize];
    }
}

/// A header value of ASCII hex digits and dashes (always valid). The bytes live in one
/// reference-counted allocation: the value is cloned for the log, and a copied-in value
/// would allocate again on its first clone.
fn header_value<const N: usize>(text: [u8; N]) -> HeaderValue {
    HeaderValue::from_maybe_shared(Bytes::from_owner(text))
        .unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, ids not all zero, version
/// not `ff` (W3C Trace Context §3.2). Later versions may append fields after a `-`.
pub fn is_valid_traceparent(value: &[u8]) -> bool {
    let lower_hex = |s: &[u8]| {
        s.iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    };
    let nonzero = |s: &[u8]| s.iter().any(|b| *b != b'0');
    if value.len() < 55 {
        return false;
    }
    let (version, trace, parent, flags) =
        (&value[0..2], &value[3..35], &value[36..52], &value[53..55]);
    let dashes = value[2] == b'-' && value[35] == b'-' && value[52] == b'-';
    let tail_ok = match value.len() {
        55 => true,
        _ => version != b"00" && value[55] == b'-',
    };
    dashes
        && tail_ok
        && lower_hex(version)
        && version != b"ff"
        && lower_hex(trace)
        && nonzero(trace)
        && lower_hex(parent)
        && nonzero(parent)
        && lower_hex(flags)
}

/// A new trace: random ids, not sampled.
fn new_traceparent() -> HeaderValue {
    let mut text = *b"00-00000000000000000000000000000000-0000000000000000-00";
    // Ids may not be all zeros; `max(1)` rather than a range, whose sampling costs a 128-bit
    // division (and changes one value in 2^64).
    lower_hex(&mut text[3..35], fastrand::u128(..).max(1));
    lower_hex(&mut text[36..52], u128::from(fastrand::u64(..).max(1)));
    header_value(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_version_4_uuids() {
        for _ in 0..100 {
            let id = generated_id();
            let text = id.to_str().expect("ascii");
            assert_eq!(text.len(), 36, "{text}");
            assert_eq!(&text[14..15], "4", "version nibble: {text}");
            assert!("89ab".contains(&text[19..20]), "variant: {text}");
            assert!(is_acceptable_id(&id));
        }
        assert_ne!(generated_id(), generated_id());
    }

    #[test]
    fn hex_is_zero_padded_lower_case() {
        let mut out = [0; 8];
        lower_hex(&mut out, 0xab_cdef);
        assert_eq!(&out, b"00abcdef");
        let mut odd = [0; 5];
        lower_hex(&mut odd, 0x1_2345);
        assert_eq!(&odd, b"12345");
        let mut out = [0; 32];
        lower_hex(&mut out, u128::MAX);
        assert_eq!(&out, b"ffffffffffffffffffffffffffffffff");
        let trace = new_traceparent();
        let text = trace.to_str().expect("ascii");
        assert!(text.starts_with("00-") && text.ends_with("-00"), "{text}");
    }

    #[test]
    fn traceparent_rules_follow_the_w3c_spec() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(is_valid_traceparent(good.as_bytes()));
        assert!(is_valid_traceparent(
            new_traceparent().to_str().expect("ascii").as_bytes()
        ));
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "garbage",
        ] {
            assert!(!is_valid_traceparent(bad.as_bytes()), "{bad}");
        }
        // A later version may carry more fields.
        assert!(is_valid_traceparent(
            b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever"
        ));
    }

    #[test]
    fn client_ids_with_separators_or_control_bytes_are_not_kept() {
        assert!(is_acceptable_id(&HeaderValue::from_static("abc-123_x.y")));
        for bad in ["", "a b", "a,b", "a\"b"] {
            assert!(!is_acceptable_id(&HeaderValue::from_static(bad)), "{bad:?}");
        }
        let long = "a".repeat(MAX_ID_LEN + 1);
        assert!(!is_acceptable_id(
            &HeaderValue::from_str(&long).expect("value")
        ));
    }
}
