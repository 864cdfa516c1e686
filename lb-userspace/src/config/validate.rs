//! The one validation step: `file` structs -> typed `model` values, every error reported.
//!
//! Items are checked one by one (each check reports its own error), then across items:
//! unique names, resolved references, and the rules that tie a pool to the services using it.

mod action;
mod announce;
mod auth;
mod certificate;
mod check;
mod client_auth;
mod dataplane;
mod discovery;
mod filter;
mod health;
mod l7;
mod log;
mod pool;
mod route;

pub(crate) use pool::backend;
mod service;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;

use toml::Spanned;

use super::diagnostic::Reporter;
use super::document::Document;
use super::file;
use super::model::{Admin, CertificateId, Config, Interface, PoolId, XdpMode};

/// Default `admin.listen`.
const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9100";
/// Default `admin.metrics_path`.
const DEFAULT_METRICS_PATH: &str = "/metrics";

/// Checks everything; `None` when any error was reported.
pub(crate) fn validate(doc: &Document, base_dir: &Path, r: &mut Reporter) -> Option<Config> {
    let interfaces = interfaces(&doc.interfaces, r);
    let admin = admin(doc.admin.as_ref(), base_dir, r);
    let announce = announce::announce(doc.announce.as_ref(), &doc.services, r);
    let dataplane = dataplane::dataplane(doc.dataplane.as_ref(), r);
    let log = log::log(doc.log.as_ref(), base_dir, r);
    let certificates = certificate::certificates(&doc.certificates, base_dir, r);
    let pools = pool::pools(&doc.pools, base_dir, r);
    let names = Names::new(doc, base_dir);
    let mut usages = Vec::new();
    let services = service::services(&doc.services, &names, &mut usages, r);
    service::check_pool_usage(&doc.pools, &usages, r);
    if doc.interfaces.is_empty() {
        service::require_interfaces(&doc.services, r);
    }
    if r.has_errors() {
        return None;
    }
    Some(Config {
        interfaces: interfaces?,
        admin: admin?,
        certificates: certificates?,
        pools: pools?,
        services: services?,
        announce: announce?,
        dataplane: dataplane?,
        log: log?,
    })
}

/// Pool and certificate names, for resolving references, and the folder files named in the
/// config (keys files, JWKS files) are taken from.
pub(crate) struct Names {
    pub(crate) base_dir: std::path::PathBuf,
    pools: HashMap<String, PoolId>,
    certificates: HashMap<String, CertificateId>,
    broken_pools: HashSet<String>,
    broken_certificates: HashSet<String>,
}

impl Names {
    fn new(doc: &Document, base_dir: &Path) -> Self {
        let mut pools = HashMap::new();
        for (i, item) in doc.pools.iter().enumerate() {
            pools
                .entry(item.pool.get_ref().name.get_ref().clone())
                .or_insert(PoolId(i));
        }
        let mut certificates = HashMap::new();
        for (i, cert) in doc.certificates.iter().enumerate() {
            certificates
                .entry(cert.get_ref().name.get_ref().clone())
                .or_insert(CertificateId(i));
        }
        Self {
            base_dir: base_dir.to_path_buf(),
            pools,
            certificates,
            broken_pools: doc.broken_pools.clone(),
            broken_certificates: doc.broken_certificates.clone(),
        }
    }

    /// The pool `name` refers to; an undefined pool is reported.
    pub(crate) fn pool(
        &self,
        name: &Spanned<String>,
        ctx: &str,
        r: &mut Reporter,
    ) -> Option<PoolId> {
        let found = self.pools.get(name.get_ref()).copied();
        if found.is_none() && !self.broken_pools.contains(name.get_ref()) {
            r.error_in(
                &name.span(),
                ctx,
                format!("pool {:?} is not defined", name.get_ref()),
            );
        }
        found
    }

    /// The certificate `name` refers to; an undefined certificate is reported.
    pub(crate) fn certificate(
        &self,
        name: &Spanned<String>,
        ctx: &str,
        r: &mut Reporter,
    ) -> Option<CertificateId> {
        let found = self.certificates.get(name.get_ref()).copied();
        if found.is_none() && !self.broken_certificates.contains(name.get_ref()) {
            r.error_in(
                &name.span(),
                ctx,
                format!("certificate {:?} is not defined", name.get_ref()),
            );
        }
        found
    }
}

fn interfaces(items: &[Spanned<file::Interface>], r: &mut Reporter) -> Option<Vec<Interface>> {
    check::unique_names(
        items.iter().map(|i| {
            (
                &i.get_ref().name,
                format!("interface {:?}", i.get_ref().name.get_ref()),
            )
        }),
        "interface",
        r,
    );
    let checked: Vec<_> = items
        .iter()
        .map(|item| {
            let item = item.get_ref();
            let name = item.name.get_ref();
            let ctx = format!("interface {name:?}");
            let valid = (1..=15).contains(&name.len())
                && !name
                    .chars()
                    .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
            if !valid {
                r.error_in(
                    &item.name.span(),
                    &ctx,
                    "not a Linux interface name (1 to 15 bytes, no '/', ':' or whitespace)",
                );
            }
            valid.then(|| Interface {
                name: name.clone(),
                xdp_mode: item.xdp_mode.unwrap_or(XdpMode::Auto),
            })
        })
        .collect();
    checked.into_iter().collect()
}

fn admin(item: Option<&Spanned<file::Admin>>, base_dir: &Path, r: &mut Reporter) -> Option<Admin> {
    let default = file::Admin::default();
    let (admin, table_span) = match item {
        Some(item) => (item.get_ref(), item.span()),
        None => (&default, 0..0),
    };
    let ctx = "admin";
    let listen = match &admin.listen {
        None => DEFAULT_ADMIN_LISTEN.parse::<SocketAddr>().ok(),
        Some(value) => {
            let parsed = value.get_ref().parse::<SocketAddr>().ok();
            if parsed.is_none() {
                r.error_in(
                    &value.span(),
                    ctx,
                    format!(
                        "listen {:?} is not a socket address like \"127.0.0.1:9100\"",
                        value.get_ref()
                    ),
                );
            }
            parsed
        }
    };
    let token_file = admin
        .token_file
        .as_ref()
        .map(|path| check::existing_file(path, base_dir, "token_file", ctx, r));
    if let (Some(addr), None) = (listen, &admin.token_file)
        && !addr.ip().is_loopback()
    {
        let span = admin.listen.as_ref().map_or(table_span, Spanned::span);
        r.error_in(
            &span,
            ctx,
            format!("listen {addr} is not a loopback address, so token_file is required"),
        );
    }
    let metrics_path = match &admin.metrics_path {
        Some(path) => check::url_path(path, "metrics_path", ctx, r),
        None => Some(DEFAULT_METRICS_PATH.to_owned()),
    };
    Some(Admin {
        listen: listen?,
        token_file: token_file.map_or(Some(None), |path| path.map(Some))?,
        metrics_path: metrics_path?,
    })
}
