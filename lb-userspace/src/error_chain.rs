//! Printing an error with its causes, for logs and operator messages built from typed errors
//! (what anyhow's `{:#}` does for its own).

use std::error::Error as StdError;
use std::fmt;

/// An error and its causes, `: `-separated (as anyhow's `{:#}` prints them).
pub struct Chain<'a>(pub &'a (dyn StdError + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(err) = cause {
            write!(f, ": {err}")?;
            cause = err.source();
        }
        Ok(())
    }
}
