//! `[log]`: its defaults, how its file is resolved, and each of its errors with its location.

use super::*;

#[test]
fn log_defaults_to_stderr_in_the_agents_format() {
    let config = valid("").config;
    assert_eq!(config.log, LogSettings::default());
    assert_eq!(config.log.access_log_file, None);
    assert_eq!(config.log.access_log_format, None);
}

#[test]
fn access_log_file_is_taken_from_the_config_files_folder() {
    let config =
        valid("[log]\naccess_log_file = \"access.log\"\naccess_log_format = \"json\"\n").config;
    assert_eq!(
        config.log.access_log_file,
        Some(origin().with_file_name("access.log"))
    );
    assert_eq!(config.log.access_log_format, Some(AccessLogFormat::Json));
    let config =
        valid("[log]\naccess_log_file = \"/tmp/a.log\"\naccess_log_format = \"text\"\n").config;
    assert_eq!(
        config.log.access_log_file,
        Some(PathBuf::from("/tmp/a.log"))
    );
    assert_eq!(config.log.access_log_format, Some(AccessLogFormat::Text));
}

#[test]
fn log_mistakes_are_reported_where_they_are() {
    assert_eq!(
        errors("[log]\naccess_log_format = \"xml\"\n"),
        ["2:21: log: access_log_format \"xml\" is not one of \"text\", \"json\""]
    );
    let missing = errors("[log]\naccess_log_file = \"/no/such/folder/a.log\"\n");
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert!(
        missing[0].starts_with("2:19: log: access_log_file /no/such/folder/a.log: its folder"),
        "{missing:?}"
    );
    let folder = errors("[log]\naccess_log_file = \"/tmp\"\n");
    assert_eq!(folder, ["2:19: log: access_log_file /tmp is a folder"]);
    assert_eq!(
        errors("[log]\naccess_log_file = \"\"\n"),
        ["2:19: log: access_log_file is empty"]
    );
    let unknown = errors("[log]\nformat = \"json\"\n");
    assert_eq!(unknown.len(), 1, "{unknown:?}");
    assert!(unknown[0].starts_with("2:1: "), "{unknown:?}");
}
