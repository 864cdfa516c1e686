//! `[announce]`: the routing table the agent writes announced VIPs into.

use std::time::Duration;

use toml::Spanned;

use super::check;
use crate::config::diagnostic::Reporter;
use crate::config::document::ServiceItem;
use crate::config::file;
use crate::config::model::{Announce, ForwardingMode};

/// Table ids the kernel reserves: unspec (0), default (253), main (254) and local (255).
/// VIP routes there would make the node itself route the VIPs.
const RESERVED_TABLES: [i64; 4] = [0, 253, 254, 255];

/// Default `announce.withdraw_grace`.
const DEFAULT_WITHDRAW_GRACE: Duration = Duration::from_secs(1);

/// Checks `[announce]`; `Some(None)` when the table is absent, `None` after an error.
/// NAT services on an announcing node get a warning: see [`warn_nat`].
pub(crate) fn announce(
    item: Option<&Spanned<file::Announce>>,
    services: &[ServiceItem],
    r: &mut Reporter,
) -> Option<Option<Announce>> {
    let Some(item) = item else {
        return Some(None);
    };
    warn_nat(services, r);
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

/// A NAT flow's reverse state lives on the node that translated it, and its backend sends
/// every reply to one gateway: with several nodes, replies of flows another node carries (or
/// that moved after a failure) come back untranslated. Legal for one announcing node, so a
/// warning rather than an error.
fn warn_nat(services: &[ServiceItem], r: &mut Reporter) {
    for item in services {
        let service = item.service.get_ref();
        if let Some(l4) = &service.l4
            && *l4.get_ref().mode.get_ref() == ForwardingMode::Nat
        {
            r.warning(
                &l4.get_ref().mode.span(),
                format!(
                    "service {:?}: nat on a node that announces its VIP ([announce]): replies \
                     must come back through the node that translated the flow, so with several \
                     nodes behind ECMP, or when a flow moves to another node, they are lost; \
                     use mode \"dsr\" for multi-node setups",
                    service.name.get_ref()
                ),
            );
        }
    }
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
    fn nat_services_on_an_announcing_node_are_warned_about() {
        let text = "[announce]\ntable = 100\n[[interface]]\nname = \"eth0\"\n\
                    [[pool]]\nname = \"p\"\nbackend = [{ address = \"10.0.0.2\", port = 53 }]\n\
                    [[service]]\nname = \"dns\"\nvip = \"10.0.0.1\"\nport = 53\n\
                    protocol = \"udp\"\nl4 = { mode = \"nat\", pool = \"p\" }\n";
        let loaded = parse(text, Path::new("a.toml")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        assert!(loaded.warnings[0].message.contains("use mode \"dsr\""));
        let without = text.replace("[announce]\ntable = 100\n", "");
        let loaded = parse(&without, Path::new("a.toml")).unwrap_or_else(|e| panic!("{e}"));
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
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
