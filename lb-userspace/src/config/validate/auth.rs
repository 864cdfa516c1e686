//! The authentication and authorization filters' settings: files read and checked here,
//! once per load, so a bad keys file is a config error and the data path gets typed values.

use std::path::Path;

use toml::Spanned;

use super::check;
use crate::config::diagnostic::Reporter;
use crate::config::file;
use crate::config::model::{ApiKeySpec, key_hash};

/// The default header of an `api_key` filter given neither `header` nor `query`.
const DEFAULT_API_KEY_HEADER: &str = "x-api-key";

/// An `api_key` filter: its keys file read and hashed, where the key is presented.
pub(super) fn api_key(
    raw: &Spanned<file::ApiKey>,
    base_dir: &Path,
    ctx: &str,
    r: &mut Reporter,
) -> Option<ApiKeySpec> {
    let a = raw.get_ref();
    let header = match &a.header {
        Some(h) => check::header_name(h, ctx, r).map(Some),
        None if a.query.is_none() => Some(Some(DEFAULT_API_KEY_HEADER.to_owned())),
        None => Some(None),
    };
    let query = match &a.query {
        Some(q) if q.get_ref().is_empty() || !q.get_ref().bytes().all(is_query_name_byte) => {
            r.error_in(
                &q.span(),
                ctx,
                format!(
                    "api_key.query {:?} is not a query parameter name (letters, digits, `-._~`)",
                    q.get_ref()
                ),
            );
            None
        }
        Some(q) => Some(Some(q.get_ref().clone())),
        None => Some(None),
    };
    let file = check::existing_file(&a.keys_file, base_dir, "api_key.keys_file", ctx, r)?;
    let keys = match std::fs::read_to_string(&file) {
        Ok(text) => match parse_keys(&text) {
            Ok(keys) => Some(keys),
            Err((line, problem)) => {
                r.error_in(
                    &a.keys_file.span(),
                    ctx,
                    format!("api_key.keys_file {}:{line}: {problem}", file.display()),
                );
                None
            }
        },
        Err(err) => {
            r.error_in(
                &a.keys_file.span(),
                ctx,
                format!("api_key.keys_file {} cannot be read: {err}", file.display()),
            );
            None
        }
    };
    Some(ApiKeySpec {
        file,
        keys: keys?,
        header: header?,
        query: query?,
    })
}

fn is_query_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The shortest key accepted: shorter ones can be guessed.
const MIN_KEY_LEN: usize = 16;

/// A keys file: `name key` per line, blank lines and `#` comments skipped. Each key is kept
/// only as its SHA-256. `Err((line, problem))` for the first bad line.
pub(crate) fn parse_keys(text: &str) -> Result<Vec<(String, [u8; 32])>, (usize, String)> {
    let mut keys: Vec<(String, [u8; 32])> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_ascii_whitespace();
        let (Some(name), Some(key), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err((number, "expected `name key`".to_owned()));
        };
        if !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err((number, format!("name {name:?} is not visible ASCII")));
        }
        if key.len() < MIN_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err((
                number,
                format!(
                    "the key of {name:?} is not at least {MIN_KEY_LEN} visible ASCII characters"
                ),
            ));
        }
        let hash = key_hash(key.as_bytes());
        if keys.iter().any(|(n, _)| n == name) {
            return Err((number, format!("name {name:?} is used twice")));
        }
        if let Some((other, _)) = keys.iter().find(|(_, h)| *h == hash) {
            return Err((
                number,
                format!("the key of {name:?} is also the key of {other:?}"),
            ));
        }
        keys.push((name.to_owned(), hash));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keys_file_is_read_into_hashes_and_its_bad_lines_named() {
        let keys =
            parse_keys("# c\n\nacme 0123456789abcdef\n  b  fedcba9876543210  \n").expect("valid");
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0], ("acme".into(), key_hash(b"0123456789abcdef")));
        assert_eq!(keys[1].0, "b");
        let err = |text: &str| parse_keys(text).expect_err("invalid");
        assert_eq!(err("a 0123456789abcdef\nb\n").0, 2);
        assert_eq!(err("a 0123456789abcdef extra\n").0, 1);
        assert!(err("a short\n").1.contains("at least 16"));
        assert!(
            err("a 0123456789abcdef\na 0123456789abcdeX\n")
                .1
                .contains("used twice")
        );
        assert!(
            err("a 0123456789abcdef\nb 0123456789abcdef\n")
                .1
                .contains("also the key of \"a\"")
        );
    }
}
