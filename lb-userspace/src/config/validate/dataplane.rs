//! `[dataplane]` checks.

use std::path::PathBuf;

use toml::Spanned;

use super::super::diagnostic::Reporter;
use super::super::file;
use super::super::model::DataplaneSettings;

/// Validates `[dataplane]`; the defaults when the table is absent.
pub(crate) fn dataplane(
    item: Option<&Spanned<file::Dataplane>>,
    r: &mut Reporter,
) -> Option<DataplaneSettings> {
    let Some(item) = item else {
        return Some(DataplaneSettings::default());
    };
    let mut settings = DataplaneSettings::default();
    if let Some(dir) = &item.get_ref().pin_dir {
        let path = PathBuf::from(dir.get_ref());
        if !path.is_absolute() || dir.get_ref().contains('\0') {
            r.error_in(
                &dir.span(),
                "dataplane",
                format!(
                    "pin_dir {:?} must be an absolute path on a bpffs mount, like \"/sys/fs/bpf/sluice\"",
                    dir.get_ref()
                ),
            );
            return None;
        }
        settings.pin_dir = path;
    }
    Some(settings)
}
