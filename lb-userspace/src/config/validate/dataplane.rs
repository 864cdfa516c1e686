//! `[dataplane]` checks.

use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::super::diagnostic::Reporter;
use super::super::file;
use super::super::model::{ConntrackTimeouts, DataplaneSettings, FloodLimits, VipEcho};
use super::check;

/// Fewest and most connection-table entries: below, a few CPUs' share is nothing; above, the
/// two tables would take many gigabytes of kernel memory.
const CONNTRACK_ENTRIES: std::ops::RangeInclusive<i64> = 1024..=67_108_864;

/// Validates `[dataplane]`; the defaults when the table is absent.
pub(crate) fn dataplane(
    item: Option<&Spanned<file::Dataplane>>,
    r: &mut Reporter,
) -> Option<DataplaneSettings> {
    let Some(item) = item else {
        return Some(DataplaneSettings::default());
    };
    let raw = item.get_ref();
    let mut settings = DataplaneSettings::default();
    let ctx = "dataplane";
    let entries = check::opt_int_in(
        raw.conntrack_entries.as_ref(),
        settings.conntrack_entries,
        CONNTRACK_ENTRIES,
        "conntrack_entries",
        ctx,
        r,
    );
    let defaults = ConntrackTimeouts::default();
    let tcp_idle = timeout(
        raw.tcp_idle_timeout.as_ref(),
        defaults.tcp_idle,
        "tcp_idle_timeout",
        r,
    );
    let udp_idle = timeout(
        raw.udp_idle_timeout.as_ref(),
        defaults.udp_idle,
        "udp_idle_timeout",
        r,
    );
    let tcp_closing = timeout(
        raw.tcp_closing_timeout.as_ref(),
        defaults.tcp_closing,
        "tcp_closing_timeout",
        r,
    );
    let flood = flood_limits(raw, r);
    let vip_echo = vip_echo(raw.vip_echo.as_ref(), r);
    settings.conntrack_entries = entries?;
    settings.vip_echo = vip_echo?;
    settings.flood = flood?;
    settings.timeouts = ConntrackTimeouts {
        tcp_idle: tcp_idle?,
        udp_idle: udp_idle?,
        tcp_closing: tcp_closing?,
    };
    if let Some(dir) = &raw.pin_dir {
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

/// `vip_echo`: one of [`VipEcho::NAMES`].
fn vip_echo(value: Option<&Spanned<String>>, r: &mut Reporter) -> Option<VipEcho> {
    let Some(value) = value else {
        return Some(VipEcho::default());
    };
    let echo = VipEcho::from_name(value.get_ref());
    if echo.is_none() {
        r.error_in(
            &value.span(),
            "dataplane",
            format!(
                "vip_echo {:?} is not one of \"{}\"",
                value.get_ref(),
                VipEcho::NAMES.join("\", \"")
            ),
        );
    }
    echo
}

/// Highest new-flow rates and bursts: beyond what one machine could see.
const RATE: std::ops::RangeInclusive<i64> = 0..=100_000_000;

/// `new_flows_per_cpu` and the per-source limits.
fn flood_limits(raw: &file::Dataplane, r: &mut Reporter) -> Option<FloodLimits> {
    let ctx = "dataplane";
    let per_cpu = check::opt_int_in(
        raw.new_flows_per_cpu.as_ref(),
        FloodLimits::default().new_flows_per_cpu,
        RATE,
        "new_flows_per_cpu",
        ctx,
        r,
    );
    let rate = check::opt_int_in(
        raw.source_new_flow_rate.as_ref(),
        0u32,
        RATE,
        "source_new_flow_rate",
        ctx,
        r,
    );
    let burst = match &raw.source_new_flow_burst {
        None => rate,
        Some(value) if rate == Some(0) => {
            r.error_in(
                &value.span(),
                ctx,
                "source_new_flow_burst needs source_new_flow_rate: set the rate too, or remove                  the burst"
                    .to_string(),
            );
            None
        }
        Some(value) => check::int_in(value, 1..=100_000_000, "source_new_flow_burst", ctx, r),
    };
    Some(FloodLimits {
        new_flows_per_cpu: per_cpu?,
        source_rate: rate?,
        source_burst: burst?,
    })
}

/// A connection-table timeout: a duration of at least one second (the data path counts whole
/// seconds), rounded up to whole seconds.
fn timeout(
    value: Option<&Spanned<String>>,
    default: Duration,
    what: &str,
    r: &mut Reporter,
) -> Option<Duration> {
    let d = check::duration(value, default, what, "dataplane", r)?;
    if d < Duration::from_secs(1) {
        if let Some(value) = value {
            r.error_in(
                &value.span(),
                "dataplane",
                format!(
                    "{what} {:?} is shorter than 1s: the data path times flows out in whole seconds",
                    value.get_ref()
                ),
            );
        }
        return None;
    }
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    Some(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::model::{ConntrackTimeouts, DataplaneSettings};
    use crate::config::parse;

    fn settings(table: &str) -> Result<DataplaneSettings, Vec<String>> {
        let text = format!("[dataplane]\n{table}");
        match parse(&text, Path::new("/etc/sluice/test.toml")) {
            Ok(loaded) => Ok(loaded.config.dataplane),
            Err(errors) => Err(errors
                .diagnostics
                .iter()
                .map(|d| format!("{}:{}: {}", d.line, d.column, d.message))
                .collect()),
        }
    }

    #[test]
    fn conntrack_defaults_and_settings() {
        let defaults = settings("").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(defaults.conntrack_entries, 262_144);
        assert_eq!(defaults.timeouts, ConntrackTimeouts::default());
        assert_eq!(defaults.timeouts.tcp_idle, Duration::from_secs(3 * 3600));
        assert_eq!(defaults.timeouts.udp_idle, Duration::from_secs(300));
        assert_eq!(defaults.timeouts.tcp_closing, Duration::from_secs(10));

        let set = settings(
            "conntrack_entries = 1000000\ntcp_idle_timeout = \"1h\"\n\
             udp_idle_timeout = \"1500ms\"\ntcp_closing_timeout = \"2s\"\n",
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(set.conntrack_entries, 1_000_000);
        assert_eq!(
            set.timeouts,
            ConntrackTimeouts {
                tcp_idle: Duration::from_secs(3600),
                udp_idle: Duration::from_secs(2),
                tcp_closing: Duration::from_secs(2),
            },
            "rounded up to whole seconds"
        );
    }

    #[test]
    fn conntrack_settings_out_of_range_are_errors_at_their_value() {
        assert_eq!(
            settings("conntrack_entries = 10\n"),
            Err(vec![
                "2:21: dataplane: conntrack_entries 10 is out of range (1024..=67108864)".into()
            ])
        );
        let errors = settings("udp_idle_timeout = \"500ms\"\ntcp_idle_timeout = \"0s\"\n")
            .err()
            .unwrap_or_default();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].contains("shorter than 1s"), "{errors:?}");
        assert!(errors[1].contains("must be longer than zero"), "{errors:?}");
        assert!(
            settings("conntrack_timeout = \"1s\"\n").is_err(),
            "unknown keys are errors"
        );
    }

    #[test]
    fn vip_echo_defaults_to_reply_and_rejects_other_words() {
        use crate::config::model::VipEcho;
        let defaults = settings("").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(defaults.vip_echo, VipEcho::Reply);
        for (name, echo) in [
            ("reply", VipEcho::Reply),
            ("pass", VipEcho::Pass),
            ("drop", VipEcho::Drop),
        ] {
            let set =
                settings(&format!("vip_echo = \"{name}\"\n")).unwrap_or_else(|e| panic!("{e:?}"));
            assert_eq!(set.vip_echo, echo);
        }
        assert_eq!(
            settings("vip_echo = \"answer\"\n"),
            Err(vec![
                "2:12: dataplane: vip_echo \"answer\" is not one of \"reply\", \"pass\", \"drop\""
                    .into()
            ])
        );
    }

    #[test]
    fn flood_limits_defaults_settings_and_errors() {
        use crate::config::model::FloodLimits;
        let defaults = settings("").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            defaults.flood,
            FloodLimits {
                new_flows_per_cpu: 125_000,
                source_rate: 0,
                source_burst: 0
            }
        );
        let set = settings("new_flows_per_cpu = 0\nsource_new_flow_rate = 50\n")
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            (set.flood.new_flows_per_cpu, set.flood.source_burst),
            (0, 50)
        );
        let set = settings("source_new_flow_rate = 50\nsource_new_flow_burst = 200\n")
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((set.flood.source_rate, set.flood.source_burst), (50, 200));
        let errors = settings("source_new_flow_burst = 5\n")
            .err()
            .unwrap_or_default();
        assert!(
            errors.len() == 1
                && errors[0].starts_with("2:25: dataplane: source_new_flow_burst needs"),
            "{errors:?}"
        );
        assert!(settings("new_flows_per_cpu = -1\n").is_err());
    }
}
