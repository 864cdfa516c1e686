//! Small checks shared by the validators: ranges, durations, names, host patterns.
//!
//! Each reports its own error (naming the item through `ctx`) and returns `None` on failure,
//! so callers check every field before combining the results.

use std::collections::HashMap;
use std::fmt::Display;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use toml::Spanned;

use crate::config::diagnostic::Reporter;
use crate::config::model::HostPattern;

/// `value` as a `T` if it lies in `range`.
pub(crate) fn int_in<T: TryFrom<i64>>(
    value: &Spanned<i64>,
    range: RangeInclusive<i64>,
    what: &str,
    ctx: &str,
    r: &mut Reporter,
) -> Option<T> {
    let v = *value.get_ref();
    if range.contains(&v)
        && let Ok(t) = T::try_from(v)
    {
        return Some(t);
    }
    let (lo, hi) = (range.start(), range.end());
    r.error_in(
        &value.span(),
        ctx,
        format!("{what} {v} is out of range ({lo}..={hi})"),
    );
    None
}

/// Like [`int_in`], with a default for an absent value.
pub(crate) fn opt_int_in<T: TryFrom<i64>>(
    value: Option<&Spanned<i64>>,
    default: T,
    range: RangeInclusive<i64>,
    what: &str,
    ctx: &str,
    r: &mut Reporter,
) -> Option<T> {
    match value {
        Some(v) => int_in(v, range, what, ctx, r),
        None => Some(default),
    }
}

/// The longest duration any setting takes: deadlines computed from settings (now + timeout)
/// can then never overflow.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// A positive duration written like "1s", "500ms" or "1m 30s"; `default` when absent.
pub(crate) fn duration(
    value: Option<&Spanned<String>>,
    default: Duration,
    what: &str,
    ctx: &str,
    r: &mut Reporter,
) -> Option<Duration> {
    let Some(value) = value else {
        return Some(default);
    };
    match humantime::parse_duration(value.get_ref()) {
        Ok(d) if d > MAX_DURATION => {
            r.error_in(
                &value.span(),
                ctx,
                format!(
                    "{what} {:?} is longer than the longest allowed, {}",
                    value.get_ref(),
                    humantime::format_duration(MAX_DURATION)
                ),
            );
            None
        }
        Ok(d) if !d.is_zero() => Some(d),
        Ok(_) => {
            r.error_in(
                &value.span(),
                ctx,
                format!("{what} must be longer than zero"),
            );
            None
        }
        Err(err) => {
            r.error_in(
                &value.span(),
                ctx,
                format!(
                    "{what} {:?} is not a duration like \"1s\" or \"500ms\" ({err})",
                    value.get_ref()
                ),
            );
            None
        }
    }
}

/// Like [`duration`], but `0s` (or absence) means off: `Some(None)`.
pub(crate) fn duration_or_off(
    value: Option<&Spanned<String>>,
    what: &str,
    ctx: &str,
    r: &mut Reporter,
) -> Option<Option<Duration>> {
    match value {
        None => Some(None),
        Some(v) if humantime::parse_duration(v.get_ref()).is_ok_and(|d| d.is_zero()) => Some(None),
        Some(v) => duration(Some(v), Duration::ZERO, what, ctx, r).map(Some),
    }
}

/// An IP address.
pub(crate) fn ip(
    value: &Spanned<String>,
    what: &str,
    ctx: &str,
    r: &mut Reporter,
) -> Option<IpAddr> {
    match value.get_ref().parse() {
        Ok(ip) => Some(ip),
        Err(_) => {
            r.error_in(
                &value.span(),
                ctx,
                format!("{what} {:?} is not an IP address", value.get_ref()),
            );
            None
        }
    }
}

/// Reports every name already used by an earlier item of the same kind (`what`).
/// Items come with the context naming them in errors.
pub(crate) fn unique_names<'a>(
    names: impl IntoIterator<Item = (&'a Spanned<String>, String)>,
    what: &str,
    r: &mut Reporter,
) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (name, ctx) in names {
        if let Some(&first) = seen.get(name.get_ref().as_str()) {
            let line = r.line_of(first);
            r.error_in(
                &name.span(),
                &ctx,
                format!("the name is already used by the {what} on line {line}"),
            );
        } else {
            seen.insert(name.get_ref(), name.span().start);
        }
    }
}

/// A non-empty name without control characters.
pub(crate) fn name(
    value: &Spanned<String>,
    what: &str,
    ctx: &str,
    r: &mut Reporter,
) -> Option<String> {
    let v = value.get_ref();
    if v.is_empty() || v.chars().any(char::is_control) {
        r.error_in(
            &value.span(),
            ctx,
            format!("{what} {v:?} must be non-empty text without control characters"),
        );
        return None;
    }
    Some(v.clone())
}

/// `*` (only if `allow_any`), `*.example.com` or `www.example.com`, lower-cased.
pub(crate) fn host_pattern(
    value: &Spanned<String>,
    allow_any: bool,
    ctx: &str,
    r: &mut Reporter,
) -> Option<HostPattern> {
    let v = value.get_ref().to_ascii_lowercase();
    let pattern = if v == "*" && allow_any {
        Some(HostPattern::Any)
    } else if let Some(suffix) = v.strip_prefix("*.") {
        is_hostname(suffix).then(|| HostPattern::Suffix(suffix.to_owned()))
    } else {
        is_hostname(&v).then(|| HostPattern::Exact(v.clone()))
    };
    if pattern.is_none() {
        let any = if allow_any {
            ", `*.example.com` or `*`"
        } else {
            " or `*.example.com`"
        };
        r.error_in(
            &value.span(),
            ctx,
            format!(
                "{:?} is not a host name like `www.example.com`{any}",
                value.get_ref()
            ),
        );
    }
    pattern
}

/// DNS host name: dot-separated labels of letters, digits and inner hyphens.
pub(crate) fn is_hostname(s: &str) -> bool {
    s.len() <= 253
        && !s.is_empty()
        && s.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// An HTTP token (method or header name), per RFC 9110 `tchar`.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A header name, lower-cased.
pub(crate) fn header_name(value: &Spanned<String>, ctx: &str, r: &mut Reporter) -> Option<String> {
    token(value, "header name", ctx, r).map(|v| v.to_ascii_lowercase())
}

/// An HTTP token, reported as `what` when it is not one.
pub(crate) fn token(
    value: &Spanned<String>,
    what: &str,
    ctx: &str,
    r: &mut Reporter,
) -> Option<String> {
    if is_token(value.get_ref()) {
        Some(value.get_ref().clone())
    } else {
        r.error_in(
            &value.span(),
            ctx,
            format!("{what} {:?} is not a valid HTTP token", value.get_ref()),
        );
        None
    }
}

/// A header value: visible characters, spaces and tabs only.
pub(crate) fn header_value(value: &Spanned<String>, ctx: &str, r: &mut Reporter) -> Option<String> {
    let v = value.get_ref();
    if v.bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
    {
        Some(v.clone())
    } else {
        r.error_in(
            &value.span(),
            ctx,
            format!("header value {v:?} contains control characters"),
        );
        None
    }
}

/// A URL path: starts with '/', no whitespace or control characters.
pub(crate) fn url_path(
    value: &Spanned<String>,
    what: &str,
    ctx: &str,
    r: &mut Reporter,
) -> Option<String> {
    let v = value.get_ref();
    if v.starts_with('/') && !v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some(v.clone())
    } else {
        r.error_in(
            &value.span(),
            ctx,
            format!("{what} {v:?} must start with '/' and contain no spaces"),
        );
        None
    }
}

/// A file that must exist; relative paths are taken from the config file's directory.
pub(crate) fn existing_file(
    value: &Spanned<String>,
    base_dir: &Path,
    what: &str,
    ctx: &str,
    r: &mut Reporter,
) -> Option<PathBuf> {
    let path = base_dir.join(value.get_ref());
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_file() => Some(path),
        Ok(_) => {
            r.error_in(
                &value.span(),
                ctx,
                format!("{what} {} is not a regular file", path.display()),
            );
            None
        }
        Err(err) => {
            r.error_in(
                &value.span(),
                ctx,
                format!("{what} {} cannot be read: {err}", path.display()),
            );
            None
        }
    }
}

/// Reports a field that the item's other settings make meaningless.
pub(crate) fn not_here<T>(
    value: Option<&Spanned<T>>,
    message: impl Display,
    ctx: &str,
    r: &mut Reporter,
) {
    if let Some(value) = value {
        r.error_in(&value.span(), ctx, message);
    }
}

/// A PEM bundle of CA certificates at `value` (relative to `base_dir`): at least one
/// certificate, every block valid.
pub(crate) fn ca_bundle(
    value: &Spanned<String>,
    base_dir: &Path,
    what: &str,
    ctx: &str,
    r: &mut Reporter,
) -> Option<(PathBuf, Vec<CertificateDer<'static>>)> {
    let path = existing_file(value, base_dir, what, ctx, r)?;
    let roots =
        CertificateDer::pem_file_iter(&path).and_then(|certs| certs.collect::<Result<Vec<_>, _>>());
    match roots {
        Ok(roots) if !roots.is_empty() => Some((path, roots)),
        Ok(_) => {
            r.error_in(
                &value.span(),
                ctx,
                format!("{what} {} holds no PEM CERTIFICATE block", path.display()),
            );
            None
        }
        Err(err) => {
            r.error_in(
                &value.span(),
                ctx,
                format!("{what} {} is not valid PEM: {err}", path.display()),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_and_tokens() {
        assert!(is_hostname("www.example.com"));
        assert!(is_hostname("localhost"));
        assert!(!is_hostname("-a.example.com"));
        assert!(!is_hostname("a..b"));
        assert!(!is_hostname("a b"));
        assert!(is_token("GET"));
        assert!(is_token("x-user"));
        assert!(!is_token("x user"));
        assert!(!is_token(""));
    }
}
