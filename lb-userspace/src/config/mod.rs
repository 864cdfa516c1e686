//! Sluice's config: one TOML file -> `file` structs -> one validation step -> [`Config`].
//!
//! [`load`] reads and checks a file; every problem found is reported at once, each naming
//! the file, line and column (`config/bad.toml:12:9: pool "web": ...`). `config/README.md`
//! documents every field for users.

mod diagnostic;
mod document;
pub mod endpoints;
mod file;
pub mod jwks;
mod model;
mod validate;
pub mod watch;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use diagnostic::{ConfigErrors, Diagnostic};
pub use model::*;

/// A validated config and the warnings found on the way (e.g. unused pools).
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The config.
    pub config: Config,
    /// Problems that do not stop the config from being used; sorted by position.
    pub warnings: Vec<Diagnostic>,
}

/// Reads and validates the config file at `path`.
///
/// Relative paths inside the file (certificates, token file) are taken from the file's
/// directory. Certificates and keys are loaded and parsed here.
pub fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|err| diagnostic::io_error(path, &err))?;
    parse(&text, path)
}

/// Validates config `text` as if it had been read from `origin`, which names the file in
/// diagnostics and anchors relative paths.
pub fn parse(text: &str, origin: &Path) -> Result<Loaded, ConfigErrors> {
    let mut reporter = diagnostic::Reporter::new(text, origin);
    let doc = document::read(text, &mut reporter);
    let base_dir = match origin.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let config = doc.and_then(|doc| validate::validate(&doc, base_dir, &mut reporter));
    let warnings = reporter.finish()?;
    match config {
        Some(config) => Ok(Loaded { config, warnings }),
        // Unreachable in practice: validation returns `None` only after reporting an error.
        None => Err(ConfigErrors {
            diagnostics: vec![Diagnostic {
                file: origin.to_path_buf(),
                line: 0,
                column: 0,
                message: "config rejected without a reported reason (a bug in Sluice)".into(),
            }],
        }),
    }
}
