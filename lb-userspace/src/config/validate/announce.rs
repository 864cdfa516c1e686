//! `[announce]`: the routing table the agent writes announced VIPs into.

use std::time::Duration;

use toml::Spanned;

use super::check;
use crate::config::diagnostic::Reporter;
use crate::config::file;
use crate::config::model::Announce;

/// Table ids the kernel reserves: unspec (0), default (253), main (254) and local (255).
/// VIP routes there would make the node itself route the VIPs.
const RESERVED_TABLES: [i64; 4] = [0, 253, 254, 255];

/// Default `announce.withdraw_grace`.
const DEFAULT_WITHDRAW_GRACE: Duration = Duration::from_secs(1);

/// Checks `[announce]`; `Some(None)` when the table is absent, `None` after an error.
pub(crate) fn announce(
    item: Option<&Spanned<file::Announce>>,
    r: &mut Reporter,
) -> Option<Option<Announce>> {
    let Some(item) = item else {
        return Some(None);
    };
    let ctx = "announce";
    let item = item.get_ref();
    let id = *item.table.get_ref();
    let table = if RESERVED_TABLES.contains(&id) {
        r.error_in(
            &item.table.span(),
            ctx,
            format!(
                "table {id} is reserved by the kernel (0 unspec, 253 default, 254 main, 255 \
                 local): pick another id, one no `ip rule` looks up"
            ),
        );
        None
    } else {
        check::int_in::<u32>(&item.table, 1..=i64::from(u32::MAX), "table", ctx, r)
    };
    let withdraw_grace = check::duration(
        item.withdraw_grace.as_ref(),
        DEFAULT_WITHDRAW_GRACE,
        "withdraw_grace",
        ctx,
        r,
    );
    Some(Some(Announce {
        table: table?,
        withdraw_grace: withdraw_grace?,
    }))
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::{Announce, parse};

    fn errors(text: &str) -> Vec<String> {
        match parse(text, Path::new("a.toml")) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.diagnostics.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn absent_table_announces_nothing() {
        let loaded = parse("", Path::new("a.toml")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded.config.announce, None);
    }

    #[test]
    fn table_and_default_grace() {
        let loaded = parse("[announce]\ntable = 100\n", Path::new("a.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            loaded.config.announce,
            Some(Announce {
                table: 100,
                withdraw_grace: Duration::from_secs(1),
            })
        );
    }

    #[test]
    fn reserved_and_out_of_range_tables_are_errors() {
        assert_eq!(
            errors("[announce]\ntable = 254\n"),
            [
                "a.toml:2:9: announce: table 254 is reserved by the kernel (0 unspec, 253 default, \
              254 main, 255 local): pick another id, one no `ip rule` looks up"
            ]
        );
        assert_eq!(
            errors("[announce]\ntable = -1\n"),
            ["a.toml:2:9: announce: table -1 is out of range (1..=4294967295)"]
        );
    }

    #[test]
    fn missing_table_unknown_field_and_bad_grace_are_errors() {
        assert_eq!(errors("[announce]\n").len(), 1);
        assert_eq!(
            errors("[announce]\ntable = 100\nbgp = true\n").len(),
            1,
            "unsupported options are errors"
        );
        assert_eq!(
            errors("[announce]\ntable = 100\nwithdraw_grace = \"soon\"\n").len(),
            1
        );
    }
}
