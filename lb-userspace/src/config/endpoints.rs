//! Endpoints files: a discovered pool's backends in a file of their own, JSON or TOML.
//!
//! ```toml
//! [[backend]]
//! address = "10.0.0.1"
//! port = 8080
//! weight = 2        # optional, 1..=10000, default 1
//! name = "web-1"    # optional, default "address:port"
//! ```
//!
//! The JSON form is the same object: `{"backend": [{"address": "10.0.0.1", "port": 8080}]}`.
//! A file with an error is rejected whole, with `file:line:col` (the pool keeps its backends).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::diagnostic::{self, ConfigErrors, Diagnostic, Reporter};
use super::file;
use super::model::Backend;

/// The TOML form: the same backend tables as `[[pool.backend]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlFile {
    #[serde(default)]
    backend: Vec<Spanned<file::Backend>>,
}

/// The JSON form: typed fields, so serde_json reports bad values at their line and column.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonFile {
    #[serde(default)]
    backend: Vec<JsonBackend>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonBackend {
    address: std::net::IpAddr,
    #[serde(deserialize_with = "port")]
    port: u16,
    #[serde(default = "one", deserialize_with = "weight")]
    weight: u16,
    name: Option<String>,
}

fn one() -> u16 {
    1
}

fn port<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    match u16::deserialize(d)? {
        0 => Err(serde::de::Error::custom("port 0 is out of range 1..=65535")),
        port => Ok(port),
    }
}

fn weight<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    let weight = u16::deserialize(d)?;
    if (1..=10_000).contains(&weight) {
        Ok(weight)
    } else {
        Err(serde::de::Error::custom(format!(
            "weight {weight} is out of range 1..=10000"
        )))
    }
}

/// Reads the endpoints file at `path` (`.json`: JSON, otherwise TOML).
pub fn load(path: &Path) -> Result<Vec<Backend>, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|err| diagnostic::io_error(path, &err))?;
    parse(&text, path)
}

/// Parses endpoints `text` read from `origin` (whose extension picks the format).
pub fn parse(text: &str, origin: &Path) -> Result<Vec<Backend>, ConfigErrors> {
    let json = origin
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if json {
        parse_json(text, origin)
    } else {
        parse_toml(text, origin)
    }
}

fn parse_toml(text: &str, origin: &Path) -> Result<Vec<Backend>, ConfigErrors> {
    let mut r = Reporter::new(text, origin);
    let raw: TomlFile = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(err) => {
            r.toml_error(&(0..0), "", &err);
            return Err(r
                .finish()
                .err()
                .unwrap_or_else(|| unreachable_errors(origin)));
        }
    };
    let ctx = "endpoints";
    let checked: Vec<_> = raw
        .backend
        .iter()
        .map(|b| super::validate::backend(b.get_ref(), ctx, &mut r))
        .collect();
    if let Some(backends) = checked.into_iter().collect::<Option<Vec<Backend>>>() {
        for (i, backend) in backends.iter().enumerate() {
            if let Some(first) = duplicate(&backends[..i], backend) {
                let span = raw.backend[i].span();
                r.error(
                    &span,
                    format!("endpoints: backend {:?} repeats {first}", backend.name),
                );
            }
        }
        if !r.has_errors() {
            return Ok(backends);
        }
    }
    Err(r
        .finish()
        .err()
        .unwrap_or_else(|| unreachable_errors(origin)))
}

fn parse_json(text: &str, origin: &Path) -> Result<Vec<Backend>, ConfigErrors> {
    let raw: JsonFile = serde_json::from_str(text).map_err(|err| ConfigErrors {
        diagnostics: vec![Diagnostic {
            file: origin.to_path_buf(),
            line: err.line(),
            column: err.column(),
            message: format!("endpoints: {err}"),
        }],
    })?;
    let backends: Vec<Backend> = raw
        .backend
        .into_iter()
        .map(|b| {
            let address = SocketAddr::new(b.address, b.port);
            Backend {
                name: b.name.unwrap_or_else(|| address.to_string()),
                address,
                weight: b.weight,
            }
        })
        .collect();
    let mut errors = Vec::new();
    for (i, backend) in backends.iter().enumerate() {
        if let Some(first) = duplicate(&backends[..i], backend) {
            errors.push(Diagnostic {
                file: origin.to_path_buf(),
                line: 0,
                column: 0,
                message: format!(
                    "endpoints: backend #{} ({:?}) repeats {first}",
                    i + 1,
                    backend.name
                ),
            });
        }
    }
    if errors.is_empty() {
        Ok(backends)
    } else {
        Err(ConfigErrors {
            diagnostics: errors,
        })
    }
}

/// What an earlier backend shares with `backend` (its name or its address), if anything.
fn duplicate(earlier: &[Backend], backend: &Backend) -> Option<String> {
    let names: HashMap<&str, SocketAddr> = earlier
        .iter()
        .map(|b| (b.name.as_str(), b.address))
        .collect();
    if let Some(other) = earlier.iter().find(|b| b.address == backend.address) {
        return Some(format!("the address of backend {:?}", other.name));
    }
    names
        .get(backend.name.as_str())
        .map(|address| format!("the name of the backend at {address}"))
}

fn unreachable_errors(origin: &Path) -> ConfigErrors {
    ConfigErrors {
        diagnostics: vec![Diagnostic {
            file: origin.to_path_buf(),
            line: 0,
            column: 0,
            message: "endpoints rejected without a reported reason (a bug in Sluice)".into(),
        }],
    }
}
