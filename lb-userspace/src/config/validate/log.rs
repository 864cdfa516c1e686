//! `[log]` checks.

use std::path::Path;

use toml::Spanned;

use super::super::diagnostic::Reporter;
use super::super::file;
use super::super::model::{AccessLogFormat, LogSettings};

/// Validates `[log]`; the defaults when the table is absent.
pub(crate) fn log(
    item: Option<&Spanned<file::Log>>,
    base_dir: &Path,
    r: &mut Reporter,
) -> Option<LogSettings> {
    let Some(item) = item else {
        return Some(LogSettings::default());
    };
    let raw = item.get_ref();
    let ctx = "log";
    let file = match &raw.access_log_file {
        None => Some(None),
        Some(value) => access_log_file(value, base_dir, ctx, r).map(Some),
    };
    let format = match &raw.access_log_format {
        None => Some(None),
        Some(value) => {
            let format = AccessLogFormat::from_name(value.get_ref());
            if format.is_none() {
                r.error_in(
                    &value.span(),
                    ctx,
                    format!(
                        "access_log_format {:?} is not one of \"{}\"",
                        value.get_ref(),
                        AccessLogFormat::NAMES.join("\", \"")
                    ),
                );
            }
            format.map(Some)
        }
    };
    Some(LogSettings {
        access_log_file: file?,
        access_log_format: format?,
    })
}

/// The access-log file: relative to the config file's folder, in a folder that exists, not a
/// folder itself. The agent creates the file if it is missing.
fn access_log_file(
    value: &Spanned<String>,
    base_dir: &Path,
    ctx: &str,
    r: &mut Reporter,
) -> Option<std::path::PathBuf> {
    let name = value.get_ref();
    if name.is_empty() {
        r.error_in(&value.span(), ctx, "access_log_file is empty");
        return None;
    }
    let path = base_dir.join(name);
    if path.is_dir() {
        r.error_in(
            &value.span(),
            ctx,
            format!("access_log_file {} is a folder", path.display()),
        );
        return None;
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent
        && !parent.is_dir()
    {
        r.error_in(
            &value.span(),
            ctx,
            format!(
                "access_log_file {}: its folder {} does not exist",
                path.display(),
                parent.display()
            ),
        );
        return None;
    }
    Some(path)
}
