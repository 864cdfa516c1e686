//! `[log]`: where the access log goes and in what format.

use std::path::PathBuf;

/// `[log]` as validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogSettings {
    /// The file access lines are appended to; `None`: standard error.
    pub access_log_file: Option<PathBuf>,
    /// The access lines' format; `None`: the agent's `--log-format`.
    pub access_log_format: Option<AccessLogFormat>,
}

/// How access lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// `key=value` fields after the time and level, as the agent's other text lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl AccessLogFormat {
    /// The names the config accepts.
    pub const NAMES: [&'static str; 2] = ["text", "json"];

    /// The format a config name means.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "text" => Some(Self::Text),
            "json" => Some(Self::Json),
            _ => None,
        }
    }
}
