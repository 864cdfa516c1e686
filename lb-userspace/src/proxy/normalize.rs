//! Request paths as routes see them and backends receive them (RFC 3986 §6.2.2): percent-
//! encoded unreserved characters decoded, other escapes upper-cased, dot segments removed
//! (§5.2.4), encoded slashes and backslashes handled as the listener says, and optionally
//! runs of slashes merged. A route that guards `/admin` then also guards `/%61dmin`,
//! `/x/../admin`, `/./admin` and `//admin`, because the backend gets the same path the
//! route matched.
//!
//! Query values are only percent-decoded ([`percent_decode`]), for routes and filters that
//! match on them.
//!
//! Pure and allocation-free for paths that are already normal (the common case).

use std::borrow::Cow;

use crate::config::{EscapedSlashes, PathSettings};

/// Why a path was refused (answered 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not `*` and not starting with `/`.
    #[error("the request path does not start with '/'")]
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    #[error("the request path has a malformed percent-encoding")]
    BadEscape,
    /// `%2F`, `%5C` or `\` with `escaped_slashes = "reject"`.
    #[error("the request path has an encoded slash or a backslash")]
    EscapedSlash,
    /// A NUL byte, raw or encoded: no backend should see one.
    #[error("the request path has a NUL byte")]
    Nul,
}

/// The normal form of `path` (without its query), borrowed when it already is normal.
pub fn normalize(path: &str, settings: PathSettings) -> Result<Cow<'_, str>, PathError> {
    if path == "*" {
        return Ok(Cow::Borrowed(path));
    }
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(path.as_bytes(), settings) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode(path.as_bytes(), settings.escaped_slashes)?;
    let merged = if settings.merge_slashes {
        merge_slashes(&decoded)
    } else {
        decoded
    };
    let mut out = remove_dot_segments(&merged);
    if settings.merge_slashes {
        out = merge_slashes(&out);
    }
    // Only ASCII was written: every byte >= 0x80 stays percent-encoded.
    Ok(Cow::Owned(
        String::from_utf8(out).map_err(|_| PathError::BadEscape)?,
    ))
}

/// Whether `path` needs no work: no escape, no backslash, no dot segment and (when merging)
/// no empty segment.
fn is_normal(path: &[u8], settings: PathSettings) -> bool {
    let mut previous = 0u8;
    for (i, &b) in path.iter().enumerate() {
        match b {
            b'%' | b'\\' | 0 => return false,
            b'/' if previous == b'/' && settings.merge_slashes => return false,
            b'.' if previous == b'/' => {
                // "/." followed by the end, "/" or "." (then end or "/") is a dot segment.
                let rest = &path[i + 1..];
                if rest.is_empty()
                    || rest[0] == b'/'
                    || (rest[0] == b'.' && (rest.len() == 1 || rest[1] == b'/'))
                {
                    return false;
                }
            }
            b if b >= 0x80 => return false,
            _ => {}
        }
        previous = b;
    }
    true
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn push_escaped(out: &mut Vec<u8>, b: u8) {
    out.extend_from_slice(&[
        b'%',
        HEX_UPPER[usize::from(b >> 4)],
        HEX_UPPER[usize::from(b & 0xf)],
    ]);
}

/// Decodes unreserved escapes, upper-cases the others, applies the slash policy, and escapes
/// raw bytes outside ASCII.
fn decode(path: &[u8], slashes: EscapedSlashes) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while let Some(&b) = path.get(i) {
        if b == b'%' {
            let (Some(h), Some(l)) = (
                path.get(i + 1).copied().and_then(hex),
                path.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(PathError::BadEscape);
            };
            let value = (h << 4) | l;
            i += 3;
            match value {
                0 => return Err(PathError::Nul),
                v if is_unreserved(v) => out.push(v),
                b'/' | b'\\' => match slashes {
                    EscapedSlashes::Keep => push_escaped(&mut out, value),
                    EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                    EscapedSlashes::Decode => out.push(b'/'),
                },
                v => push_escaped(&mut out, v),
            }
            continue;
        }
        i += 1;
        match b {
            0 => return Err(PathError::Nul),
            b'\\' => match slashes {
                // A backslash stays a backslash, escaped so no later step reads it as a
                // separator and the backend gets an unambiguous target.
                EscapedSlashes::Keep => push_escaped(&mut out, b),
                EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                EscapedSlashes::Decode => out.push(b'/'),
            },
            b if b >= 0x80 => push_escaped(&mut out, b),
            b => out.push(b),
        }
    }
    Ok(out)
}

/// Collapses runs of `/` into one.
fn merge_slashes(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    for &b in path {
        if b == b'/' && out.last() == Some(&b'/') {
            continue;
        }
        out.push(b);
    }
    out
}

/// RFC 3986 §5.2.4 on an absolute path, segment by segment: `.` goes, `..` removes the
/// segment before it (never above the root). A path ending in a dot segment keeps its
/// trailing slash (`/a/b/..` is `/a/`).
fn remove_dot_segments(path: &[u8]) -> Vec<u8> {
    // Segments after the leading '/'.
    let mut kept: Vec<&[u8]> = Vec::new();
    let mut trailing_slash = false;
    let segments: Vec<&[u8]> = path.get(1..).unwrap_or(&[]).split(|&b| b == b'/').collect();
    let last = segments.len().saturating_sub(1);
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            b"." => trailing_slash = i == last,
            b".." => {
                kept.pop();
                trailing_slash = i == last;
            }
            s => {
                kept.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = Vec::with_capacity(path.len());
    for segment in &kept {
        out.push(b'/');
        out.extend_from_slice(segment);
    }
    if trailing_slash || out.is_empty() {
        out.push(b'/');
    }
    out
}

/// Decodes `%XX` escapes; borrows when there are none. Invalid escapes stay as they are.
pub(crate) fn percent_decode(value: &str) -> Cow<'_, str> {
    if !value.contains('%') {
        return value.into();
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes.get(i), bytes.get(i + 1), bytes.get(i + 2)) {
            (Some(b'%'), Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let (h, l) = (hex(h).unwrap_or(0), hex(l).unwrap_or(0));
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (Some(&b), _, _) => {
                out.push(b);
                i += 1;
            }
            (None, _, _) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned().into()
}

#[cfg(test)]
#[path = "normalize_tests.rs"]
mod tests;
