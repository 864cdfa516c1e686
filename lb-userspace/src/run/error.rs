//! Why a reload (or a change of discovered backends) was not applied. The running config
//! stays in force in every case; the text is what `sluice reload` and the log show.

use std::fmt;

use lb_common::maglev::MaglevError;

use crate::config::ConfigErrors;
use crate::dataplane::DataplaneError;
use crate::error_chain::Chain;
use crate::proxy::ProxyStartError;

/// Why `POST /reload` (or SIGHUP, or a file change) left the running config in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file does not validate.
    #[error("config rejected:\n{0}")]
    Rejected(#[source] ConfigErrors),
    /// The file validates but could not be put in force.
    #[error("reload failed: {}", Chain(.0))]
    Failed(#[source] ApplyError),
}

/// Why a valid config could not be put in force.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The forwarding mode the config asks for is not available.
    #[error(transparent)]
    Forwarding(DataplaneError),
    /// `[dataplane]` changed; its pins are in use by the running program.
    #[error("[dataplane] changes need a restart of sluice (the pins are in use)")]
    DataplaneChanged,
    /// `[admin]` changed; the admin API is how reloads arrive.
    #[error("[admin] changes need a restart of sluice (the admin API is how reloads arrive)")]
    AdminChanged,
    /// Some L7 listeners could not be built or bound; each with its causes.
    #[error("{}", Joined(.0))]
    Listeners(Vec<ProxyStartError>),
    /// The Maglev tables of the config in force could not be rebuilt to roll back to.
    #[error("building the running Maglev tables")]
    RunningTables(#[source] MaglevError),
    /// The new config's Maglev tables could not be built.
    #[error("building Maglev tables")]
    Tables(#[source] MaglevError),
    /// A new interface could not be attached (those attached before it were detached).
    #[error(transparent)]
    Attach(DataplaneError),
    /// The kernel maps could not be written; the previous tables were restored.
    #[error("writing the kernel maps (the previous tables were restored)")]
    WriteMaps(#[source] WriteError),
}

/// Why writing the new tables to the kernel failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The tables could not be built under the health view of the moment.
    #[error("building Maglev tables")]
    Tables(#[source] MaglevError),
    /// A map update failed.
    #[error(transparent)]
    Maps(DataplaneError),
}

/// Several listener errors, each with its causes, `; `-separated.
struct Joined<'a>(&'a [ProxyStartError]);

impl fmt::Display for Joined<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, err) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}", Chain(err))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    #[test]
    fn a_failed_reload_names_each_cause_as_before() {
        let addr: SocketAddr = "203.0.113.77:8080".parse().expect("address");
        let bind = || ProxyStartError::Bind {
            service: "web".into(),
            addr,
            source: std::io::Error::from(std::io::ErrorKind::AddrNotAvailable),
            hint: "",
        };
        let err = ReloadError::Failed(ApplyError::Listeners(vec![bind(), bind()]));
        let one = "service \"web\": cannot listen on 203.0.113.77:8080: address not available";
        assert_eq!(err.to_string(), format!("reload failed: {one}; {one}"));
        assert_eq!(
            ReloadError::Failed(ApplyError::AdminChanged).to_string(),
            "reload failed: [admin] changes need a restart of sluice (the admin API is how reloads arrive)"
        );
    }
}
