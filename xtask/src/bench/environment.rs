//! The machine a bench ran on, recorded with its figures: timings from a busy or different
//! machine are not comparable, and the JSON should say so by itself.

use serde::Serialize;

/// Load average (1 minute), over what the bench itself causes, above which the bench warns
/// that other work shared the machine.
const BUSY_MARGIN: f64 = 0.5;

#[derive(Clone, Debug, Serialize)]
pub struct Environment {
    pub kernel: String,
    pub cpu_model: String,
    pub cpus: usize,
    /// 1, 5 and 15 minute load averages when the bench started and when it ended.
    pub loadavg_before: [f64; 3],
    pub loadavg_after: [f64; 3],
}

impl Environment {
    /// What can be known before the run; [`Environment::finish`] adds the load after it.
    pub fn start() -> Environment {
        let loadavg = loadavg();
        Environment {
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            cpu_model: read("/proc/cpuinfo")
                .lines()
                .find_map(|l| l.strip_prefix("model name")?.split(':').nth(1))
                .unwrap_or("unknown")
                .trim()
                .to_owned(),
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            loadavg_before: loadavg,
            loadavg_after: loadavg,
        }
    }

    pub fn finish(&mut self) {
        self.loadavg_after = loadavg();
    }

    /// A warning for the report when other work was running during the bench, which itself
    /// keeps `own_load` CPUs busy.
    pub fn warning(&self, own_load: f64) -> Option<String> {
        let load = self.loadavg_before[0].max(self.loadavg_after[0]);
        (load > own_load + BUSY_MARGIN).then(|| {
            format!(
                "**Warning:** the machine was busy (1-minute load average {:.1} before, {:.1} \
                 after, on {} CPUs): other work shares caches and CPU time with the bench, so \
                 these figures are high. Re-run on a quiet machine before comparing them.",
                self.loadavg_before[0], self.loadavg_after[0], self.cpus
            )
        })
    }
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The 1, 5 and 15 minute load averages now.
pub fn loadavg() -> [f64; 3] {
    let text = read("/proc/loadavg");
    let mut fields = text
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(f64::NAN));
    [(); 3].map(|()| fields.next().unwrap_or(f64::NAN))
}
