//! TOML text -> `file` structs, one item at a time so that every item's errors are reported.
//!
//! The document is parsed into toml's spanned tree first. Each `[[interface]]`,
//! `[[certificate]]`, `[[pool]]`, `[[pool.backend]]`, `[[service]]`, virtual host and route is
//! then deserialized on its own: a type error or unknown field in one of them is reported and
//! the item dropped, while the others are still checked.

use std::collections::HashSet;
use std::ops::Range;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::diagnostic::Reporter;
use super::file;

/// The deserialized items of one config file.
#[derive(Debug, Default)]
pub(crate) struct Document {
    pub interfaces: Vec<Spanned<file::Interface>>,
    pub admin: Option<Spanned<file::Admin>>,
    pub announce: Option<Spanned<file::Announce>>,
    pub dataplane: Option<Spanned<file::Dataplane>>,
    pub log: Option<Spanned<file::Log>>,
    pub certificates: Vec<Spanned<file::Certificate>>,
    pub pools: Vec<PoolItem>,
    pub services: Vec<ServiceItem>,
    /// Names of pools that failed to deserialize: references to them are not errors of
    /// their own, the pool's error already stops the file.
    pub broken_pools: HashSet<String>,
    /// Names of certificates that failed to deserialize, likewise.
    pub broken_certificates: HashSet<String>,
}

/// A pool and its backends; `None` marks a backend that failed to deserialize.
#[derive(Debug)]
pub(crate) struct PoolItem {
    pub pool: Spanned<file::Pool>,
    pub backends: Vec<Option<Spanned<file::Backend>>>,
}

/// A service and, for l7, its virtual hosts; `None` marks one that failed to deserialize.
#[derive(Debug)]
pub(crate) struct ServiceItem {
    pub service: Spanned<file::Service>,
    pub virtual_hosts: Vec<Option<VirtualHostItem>>,
}

/// A virtual host and its routes; `None` marks a route that failed to deserialize.
#[derive(Debug)]
pub(crate) struct VirtualHostItem {
    pub virtual_host: Spanned<file::VirtualHost>,
    pub routes: Vec<Option<Spanned<file::Route>>>,
}

const TOP_LEVEL_KEYS: &str =
    "`interface`, `admin`, `announce`, `dataplane`, `log`, `certificate`, `pool`, `service`";

/// Parses `text`; item errors are reported and the item skipped. `None` after syntax errors.
pub(crate) fn read(text: &str, r: &mut Reporter) -> Option<Document> {
    let (root, syntax_errors) = DeTable::parse_recoverable(text);
    let root_span = root.span();
    if !syntax_errors.is_empty() {
        for err in &syntax_errors {
            r.toml_error(&root_span, "syntax error", err);
        }
        // Recovered trees hold guesses; checking them would only add noise.
        return None;
    }
    let mut doc = Document::default();
    for (key, value) in root.into_inner() {
        let key_span = key.span();
        match key.get_ref().as_ref() {
            "interface" => {
                for (n, item) in items(value, "interface", r).into_iter().enumerate() {
                    let context = context("interface", &item, n);
                    if let Some(v) = decode(item, &context, r) {
                        doc.interfaces.push(v);
                    }
                }
            }
            "admin" => doc.admin = decode(value, "admin", r),
            "announce" => doc.announce = decode(value, "announce", r),
            "dataplane" => doc.dataplane = decode(value, "dataplane", r),
            "log" => doc.log = decode(value, "log", r),
            "certificate" => {
                for (n, item) in items(value, "certificate", r).into_iter().enumerate() {
                    let context = context("certificate", &item, n);
                    let name = name(&item);
                    match decode(item, &context, r) {
                        Some(v) => doc.certificates.push(v),
                        None => doc.broken_certificates.extend(name),
                    }
                }
            }
            "pool" => {
                for (n, item) in items(value, "pool", r).into_iter().enumerate() {
                    read_pool(item, n, &mut doc, r);
                }
            }
            "service" => {
                for (n, item) in items(value, "service", r).into_iter().enumerate() {
                    read_service(item, n, &mut doc, r);
                }
            }
            other => r.error(
                &key_span,
                format!("unknown top-level key `{other}`, expected one of {TOP_LEVEL_KEYS}"),
            ),
        }
    }
    Some(doc)
}

fn read_pool(mut item: Spanned<DeValue<'_>>, n: usize, doc: &mut Document, r: &mut Reporter) {
    let context = context("pool", &item, n);
    let name = name(&item);
    let backends = take_children(&mut item, "backend", "pool.backend", r);
    let backends = backends.map(|list| {
        list.into_iter()
            .enumerate()
            .map(|(i, b)| decode(b, &format!("{context}, backend #{}", i + 1), r))
            .collect()
    });
    match (decode(item, &context, r), backends) {
        (Some(pool), Some(backends)) => doc.pools.push(PoolItem { pool, backends }),
        // A pool whose backend list is unreadable is still a pool other items may name.
        (Some(pool), None) => doc.pools.push(PoolItem {
            pool,
            backends: vec![None],
        }),
        (None, _) => doc.broken_pools.extend(name),
    }
}

fn read_service(mut item: Spanned<DeValue<'_>>, n: usize, doc: &mut Document, r: &mut Reporter) {
    let context = context("service", &item, n);
    let mut virtual_hosts = Vec::new();
    if let DeValue::Table(table) = item.get_mut()
        && let Some(l7) = table.get_mut("l7")
    {
        if let Some(list) = take_children(l7, "virtual_host", "service.l7.virtual_host", r) {
            for (i, vh) in list.into_iter().enumerate() {
                let vh_context = format!("{context}, {}", self::context("virtual host", &vh, i));
                virtual_hosts.push(read_virtual_host(vh, &vh_context, r));
            }
        } else {
            virtual_hosts.push(None);
        }
    }
    if let Some(service) = decode(item, &context, r) {
        doc.services.push(ServiceItem {
            service,
            virtual_hosts,
        });
    }
}

fn read_virtual_host(
    mut item: Spanned<DeValue<'_>>,
    context: &str,
    r: &mut Reporter,
) -> Option<VirtualHostItem> {
    let routes = take_children(&mut item, "route", "service.l7.virtual_host.route", r);
    let routes = routes.map(|list| {
        list.into_iter()
            .enumerate()
            .map(|(i, route)| decode(route, &format!("{context}, route #{}", i + 1), r))
            .collect()
    });
    let virtual_host = decode(item, context, r)?;
    Some(VirtualHostItem {
        virtual_host,
        routes: routes.unwrap_or_else(|| vec![None]),
    })
}

/// The items of a top-level array of tables; any other shape is reported.
fn items<'i>(
    value: Spanned<DeValue<'i>>,
    key: &str,
    r: &mut Reporter,
) -> Vec<Spanned<DeValue<'i>>> {
    let span = value.span();
    match value.into_inner() {
        DeValue::Array(list) => list.into_iter().collect(),
        other => {
            r.error(
                &span,
                format!(
                    "`{key}` must be an array of tables (`[[{key}]]`), found a {}",
                    other.type_str()
                ),
            );
            Vec::new()
        }
    }
}

/// Removes `key` (an array of tables) from the table `parent`. `Some(empty)` when absent;
/// `None`, reported, when it has another shape.
fn take_children<'i>(
    parent: &mut Spanned<DeValue<'i>>,
    key: &str,
    path: &str,
    r: &mut Reporter,
) -> Option<Vec<Spanned<DeValue<'i>>>> {
    let DeValue::Table(table) = parent.get_mut() else {
        // Deserializing the parent reports that it is not a table.
        return Some(Vec::new());
    };
    let Some(value) = table.remove(key) else {
        return Some(Vec::new());
    };
    let span = value.span();
    match value.into_inner() {
        DeValue::Array(list) => Some(list.into_iter().collect()),
        other => {
            r.error(
                &span,
                format!(
                    "`{key}` must be an array of tables (`[[{path}]]`), found a {}",
                    other.type_str()
                ),
            );
            None
        }
    }
}

/// The item's `name`, if it is a string.
fn name(item: &Spanned<DeValue<'_>>) -> Option<String> {
    let name = item.get_ref().get("name")?;
    name.get_ref().as_str().map(str::to_owned)
}

/// `pool "web"`, or `pool #3` when the item has no readable name.
fn context(kind: &str, item: &Spanned<DeValue<'_>>, n: usize) -> String {
    match name(item) {
        Some(name) => format!("{kind} {name:?}"),
        None => format!("{kind} #{}", n + 1),
    }
}

/// Deserializes one item, reporting (with `context`) why it could not be.
fn decode<T: DeserializeOwned>(
    value: Spanned<DeValue<'_>>,
    context: &str,
    r: &mut Reporter,
) -> Option<Spanned<T>> {
    let span: Range<usize> = value.span();
    match Spanned::<T>::deserialize(ValueDeserializer::from(value)) {
        Ok(v) => Some(v),
        Err(err) => {
            r.toml_error(&span, context, &err);
            None
        }
    }
}
