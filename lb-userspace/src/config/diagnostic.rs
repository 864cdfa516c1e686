//! Config errors and warnings, located by file, line and column.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem found in a config file, printed as `file:line:col: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The config file, as it was named to [`load`](super::load) or [`parse`](super::parse).
    pub file: PathBuf,
    /// 1-based line; 0 when the problem is not inside the file (it could not be read).
    pub line: usize,
    /// 1-based column, counted in characters; 0 when `line` is 0.
    pub column: usize,
    /// What is wrong, starting with the item it concerns (`pool "web": ...`).
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// Every error found in a config file; the file is rejected as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    /// Sorted by position in the file; never empty.
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

/// Turns byte spans into line:column and collects errors and warnings as validation goes.
#[derive(Debug)]
pub(crate) struct Reporter {
    file: PathBuf,
    /// Byte offset where each line starts, and the text to count characters in.
    line_starts: Vec<usize>,
    text: String,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl Reporter {
    pub(crate) fn new(text: &str, file: &Path) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self {
            file: file.to_path_buf(),
            line_starts,
            text: text.to_owned(),
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Records an error at the start of `span`.
    pub(crate) fn error(&mut self, span: &Range<usize>, message: impl Into<String>) {
        let diagnostic = self.diagnostic(span.start, message.into());
        self.errors.push(diagnostic);
    }

    /// Records an error about the item named by `context` (`pool "web"`).
    pub(crate) fn error_in(
        &mut self,
        span: &Range<usize>,
        context: &str,
        message: impl fmt::Display,
    ) {
        self.error(span, format!("{context}: {message}"));
    }

    /// The 1-based line of a byte offset, to point from one diagnostic at another place.
    pub(crate) fn line_of(&self, offset: usize) -> usize {
        self.line_column(offset).0
    }

    /// Records a warning at the start of `span`.
    pub(crate) fn warning(&mut self, span: &Range<usize>, message: impl Into<String>) {
        let diagnostic = self.diagnostic(span.start, message.into());
        self.warnings.push(diagnostic);
    }

    /// Records a `toml` parse or deserialization error, prefixed with the item it concerns.
    pub(crate) fn toml_error(
        &mut self,
        fallback: &Range<usize>,
        context: &str,
        err: &toml::de::Error,
    ) {
        let span = err.span().unwrap_or_else(|| fallback.clone());
        // toml's messages may span lines ("expected ..."); one line per diagnostic reads better.
        // File structs read numbers as i64 to range-check them; users think "integer".
        let message = err
            .message()
            .trim()
            .replace('\n', ", ")
            .replace("expected i64", "expected an integer");
        if context.is_empty() {
            self.error(&span, message);
        } else {
            self.error(&span, format!("{context}: {message}"));
        }
    }

    pub(crate) fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// Errors (if any) or warnings, each sorted by position.
    pub(crate) fn finish(mut self) -> Result<Vec<Diagnostic>, ConfigErrors> {
        let by_position = |d: &Diagnostic| (d.line, d.column);
        self.warnings.sort_by_key(by_position);
        if self.errors.is_empty() {
            Ok(self.warnings)
        } else {
            self.errors.sort_by_key(by_position);
            Err(ConfigErrors {
                diagnostics: self.errors,
            })
        }
    }

    fn diagnostic(&self, offset: usize, message: String) -> Diagnostic {
        let (line, column) = self.line_column(offset);
        Diagnostic {
            file: self.file.clone(),
            line,
            column,
            message,
        }
    }

    /// 1-based line and character column of a byte offset (clamped to the text).
    fn line_column(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let start = self
            .line_starts
            .get(line.saturating_sub(1))
            .copied()
            .unwrap_or(0);
        let column = self
            .text
            .get(start..offset)
            .map_or(0, |prefix| prefix.chars().count());
        (line, column + 1)
    }
}

/// A diagnostic for a file that could not be read at all.
pub(crate) fn io_error(file: &Path, err: &std::io::Error) -> ConfigErrors {
    ConfigErrors {
        diagnostics: vec![Diagnostic {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read the config file (no line to point at): {err}"),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_one_based_line_and_character_column() {
        let reporter = Reporter::new("ab\nçd\n\nx", Path::new("f.toml"));
        assert_eq!(reporter.line_column(0), (1, 1));
        assert_eq!(reporter.line_column(1), (1, 2));
        assert_eq!(reporter.line_column(3), (2, 1));
        // 'ç' is two bytes but one column.
        assert_eq!(reporter.line_column(5), (2, 2));
        assert_eq!(reporter.line_column(7), (3, 1));
        assert_eq!(reporter.line_column(8), (4, 1));
        assert_eq!(reporter.line_column(100), (4, 2));
    }

    #[test]
    fn display_is_file_line_column_message() {
        let d = Diagnostic {
            file: PathBuf::from("config/bad.toml"),
            line: 12,
            column: 9,
            message: "pool \"web\": weight 0 is out of range (1..=10000)".into(),
        };
        assert_eq!(
            d.to_string(),
            "config/bad.toml:12:9: pool \"web\": weight 0 is out of range (1..=10000)"
        );
    }

    #[test]
    fn errors_are_sorted_and_win_over_warnings() {
        let mut r = Reporter::new("a\nb\nc\n", Path::new("f.toml"));
        r.warning(&(0..1), "w");
        r.error(&(4..5), "second");
        r.error(&(2..3), "first");
        let errors = r.finish().err().map(|e| e.to_string());
        assert_eq!(
            errors.as_deref(),
            Some("f.toml:2:1: first\nf.toml:3:1: second")
        );
    }
}
