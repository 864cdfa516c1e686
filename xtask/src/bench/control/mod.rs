//! The control plane: Maglev build time and disruption (in process, `lb-common`), the time
//! the agent takes to apply a reload of 10,000 backends, and the time from a backend's death
//! to its removal from the kernel's table. A measurement that fails is reported as failed and
//! the others still run.

mod maglev;
mod reload;
mod removal;

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

use self::maglev::MaglevRow;
use self::reload::ReloadReport;
use self::removal::RemovalReport;
use crate::bench::compare::{cell, median};
use crate::bench::interrupt;
use crate::shell::step;

pub struct Options {
    pub sluice: PathBuf,
    pub rounds: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome<T> {
    Measured(T),
    Failed(String),
}

impl<T> Outcome<T> {
    fn of(result: Result<T>, what: &str) -> Result<Outcome<T>> {
        match result {
            Ok(value) => Ok(Outcome::Measured(value)),
            Err(err) => {
                // An interruption ends the part; anything else is reported.
                interrupt::check()?;
                eprintln!("error: {what}: {err:#}");
                Ok(Outcome::Failed(format!("{err:#}")))
            }
        }
    }
}

#[derive(Serialize)]
pub struct ControlReport {
    pub maglev: Vec<MaglevRow>,
    pub reload: Outcome<ReloadReport>,
    pub removal: Outcome<RemovalReport>,
}

pub fn run(opts: &Options) -> Result<ControlReport> {
    step("Measuring", "Maglev table builds (M = 65537)");
    let maglev = maglev::measure(opts.rounds)?;
    step(
        "Measuring",
        &format!("reloads of {} backends through the agent", reload::LARGE),
    );
    let reload = Outcome::of(reload::measure(&opts.sluice, opts.rounds), "reload")?;
    step(
        "Measuring",
        "a dead backend's removal from the kernel's table",
    );
    let removal = Outcome::of(removal::measure(&opts.sluice, opts.rounds), "removal")?;
    Ok(ControlReport {
        maglev,
        reload,
        removal,
    })
}

pub fn markdown(report: &ControlReport) -> String {
    let mut out = String::from("### Control plane\n\n");
    let _ = writeln!(
        out,
        "Maglev table build (M = 65537, equal weights, median of {} builds) and slots moved \
         when the middle backend leaves:\n",
        report.maglev.first().map_or(0, |r| r.build_ms.len())
    );
    let _ = writeln!(
        out,
        "| backends | build ms | slots moved | moved share | removed backend's share |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|");
    for row in &report.maglev {
        let _ = writeln!(
            out,
            "| {} | {:.2} | {} | {:.3}% | {:.3}% |",
            row.backends,
            row.build_ms_median,
            row.moved_slots,
            row.moved_share * 100.0,
            row.removed_share * 100.0
        );
    }
    out.push('\n');
    match &report.reload {
        Outcome::Measured(r) => {
            let _ = writeln!(
                out,
                "Reload through `POST /reload` (answers once the kernel maps are written; one \
                 DSR service, backends on a directly connected /16):\n"
            );
            let _ = writeln!(out, "| reload | median ms | runs ms |");
            let _ = writeln!(out, "|---|---:|---|");
            for s in &r.steps {
                let runs: Vec<String> = s.ms.iter().map(|m| format!("{m:.0}")).collect();
                let _ = writeln!(
                    out,
                    "| {} -> {} backends | {} | {} |",
                    s.from_backends,
                    s.to_backends,
                    cell(median(&s.ms), 0),
                    runs.join(", ")
                );
            }
            let _ = writeln!(
                out,
                "\nThe agent logged {} warnings over these reloads, {} of them about managed \
                 neighbour entries.\n",
                r.warnings, r.neighbour_failures
            );
        }
        Outcome::Failed(e) => {
            let _ = writeln!(
                out,
                "Reload of {} backends: **failed**: {e}\n",
                reload::LARGE
            );
        }
    }
    match &report.removal {
        Outcome::Measured(r) => {
            let _ = writeln!(
                out,
                "A backend's death (link down) to its removal from the kernel's Maglev table \
                 (TCP checks every {} ms, timeout {} ms, fall {}, rise {}; bound {} ms + one \
                 timeout): median {} ms (runs: {}); back in the table a median {} ms after it \
                 revived.",
                r.interval_ms,
                r.timeout_ms,
                r.fall,
                r.rise,
                r.interval_ms * r.fall,
                cell(median(&r.removed_ms), 0),
                list(&r.removed_ms),
                cell(median(&r.readmitted_ms), 0),
            );
        }
        Outcome::Failed(e) => {
            let _ = writeln!(out, "Death to removal: **failed**: {e}");
        }
    }
    out
}

fn list(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}
