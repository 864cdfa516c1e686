//! What the demo shows: timestamped messages, and a panel of the two services with, per
//! backend, its health and weight as the agent reports them and its share of recent
//! answers. On a terminal the panel is redrawn in place under the messages; otherwise it
//! is printed as plain text at the end of each step, without escape codes.

use std::io::{IsTerminal, Write};
use std::net::SocketAddrV4;
use std::time::Instant;

use super::agent::Status;
use super::topology::{APP_VIP, BACKENDS, Tier, WEB_VIP};
use super::traffic::{Outcome, Snapshot};

/// Width of a full bar, in characters.
const BAR: usize = 24;
/// The panel's widest line; a narrower terminal gets the plain-text output, since redrawing
/// in place needs lines that do not wrap.
pub const PANEL_WIDTH: usize = 72;
/// Messages wrap at this width, or the terminal's if narrower.
const MESSAGE_WIDTH: usize = 100;

/// The terminal, or a log.
pub struct Screen {
    tty: bool,
    /// Lines of the panel currently on screen, erased before anything else is printed.
    panel_lines: usize,
    start: Instant,
}

impl Screen {
    pub fn new() -> Screen {
        Screen {
            tty: std::io::stdout().is_terminal()
                && terminal_width().is_none_or(|width| width > PANEL_WIDTH),
            panel_lines: 0,
            start: Instant::now(),
        }
    }

    /// Whether the panel is redrawn live.
    pub fn is_live(&self) -> bool {
        self.tty
    }

    /// Prints a message, stamped with the time since the demo started, its lines wrapped to
    /// the terminal (or [`MESSAGE_WIDTH`]) unless indented.
    pub fn say(&mut self, text: &str) {
        self.erase();
        let stamp = format!("[{:5.1}s] ", self.start.elapsed().as_secs_f64());
        let width = terminal_width().unwrap_or(MESSAGE_WIDTH).min(MESSAGE_WIDTH);
        let mut first = true;
        for line in text.lines() {
            // Indented lines (commands, metric samples) are copied as they are.
            let pieces = if line.starts_with(' ') {
                vec![line.to_string()]
            } else {
                wrap(line, width.saturating_sub(stamp.len()).max(40))
            };
            for piece in pieces {
                let lead = if first {
                    stamp.clone()
                } else {
                    " ".repeat(stamp.len())
                };
                println!("{lead}{piece}");
                first = false;
            }
        }
        flush();
    }

    /// Redraws the live panel (terminal only).
    pub fn draw(&mut self, panel: &[String]) {
        if !self.tty {
            return;
        }
        self.erase();
        for line in panel {
            println!("{line}");
        }
        self.panel_lines = panel.len();
        flush();
    }

    /// Prints the panel as it is now, to stay in the output: a terminal keeps the live
    /// panel where it is and draws the next one below it.
    pub fn snapshot(&mut self, panel: &[String]) {
        self.erase();
        for line in panel {
            println!("{line}");
        }
        flush();
    }

    /// Removes the live panel so that what comes next is printed in its place.
    fn erase(&mut self) {
        if self.tty && self.panel_lines > 0 {
            // Cursor up over the panel, then clear to the end of the screen.
            print!("\x1b[{}A\x1b[J", self.panel_lines);
            self.panel_lines = 0;
        }
    }
}

/// Splits `line` at spaces into pieces of at most `width` characters (a longer word stays
/// whole); continuation pieces keep the line's indentation.
fn wrap(line: &str, width: usize) -> Vec<String> {
    let indent = line.len() - line.trim_start().len();
    let mut pieces = Vec::new();
    let mut current = line[..indent].to_string();
    for word in line.split_whitespace() {
        let fresh = current.trim().is_empty();
        if !fresh && current.chars().count() + 1 + word.chars().count() > width {
            pieces.push(std::mem::replace(&mut current, " ".repeat(indent)));
        }
        if !current.trim().is_empty() {
            current.push(' ');
        }
        current.push_str(word);
    }
    pieces.push(current);
    pieces
}

/// Columns of the terminal on stdout, if it says.
fn terminal_width() -> Option<usize> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into `size`, which outlives the call.
    let ret = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) };
    (ret == 0 && size.ws_col > 0).then_some(usize::from(size.ws_col))
}

fn flush() {
    let _ = std::io::stdout().flush();
}

/// The panel: both services, their backends and who answered lately. At most
/// [`PANEL_WIDTH`] columns wide.
pub fn panel(web: &Snapshot, app: &Snapshot, status: Option<&Status>, tty: bool) -> Vec<String> {
    let mut lines = vec![format!(
        "    {:<8} {:>6}  {:<8} {:<width$} {:>8}",
        "backend",
        "weight",
        "health",
        format!("share of the last {} s", web.window.as_secs()),
        "total",
        width = BAR + 5,
    )];
    service(
        &mut lines,
        "web",
        "l4 dsr",
        WEB_VIP,
        "flows placed by XDP",
        web,
    );
    backend_rows(&mut lines, web, Tier::L4, status, tty);
    service(
        &mut lines,
        "app",
        "l7 https",
        APP_VIP,
        "requests placed by the agent",
        app,
    );
    backend_rows(&mut lines, app, Tier::L7, status, tty);
    lines
}

fn service(
    lines: &mut Vec<String>,
    name: &str,
    kind: &str,
    vip: SocketAddrV4,
    what: &str,
    counts: &Snapshot,
) {
    let recent: u64 = counts.recent.values().sum();
    let rate = recent as f64 / counts.window.as_secs_f64().max(0.001);
    let head = format!("  {name}  {kind:<9} {:<17} {what}", vip.to_string());
    lines.push(format!("{head:<63} {:>5.0}/s", rate));
}

fn backend_rows(
    lines: &mut Vec<String>,
    counts: &Snapshot,
    tier: Tier,
    status: Option<&Status>,
    tty: bool,
) {
    let recent_sum: u64 = counts.recent.values().sum();
    let names = BACKENDS.iter().filter(|b| b.tier == tier).map(|b| b.name);
    for name in names {
        let state = status.and_then(|s| s.backend(name));
        let (weight, health) = match state {
            Some(b) if b.drained => (b.weight.to_string(), "drained"),
            Some(b) if b.healthy => (b.weight.to_string(), "healthy"),
            Some(b) => (b.weight.to_string(), "DOWN"),
            None => ("?".into(), "?"),
        };
        let health = if tty && health == "DOWN" {
            format!("\x1b[1;31m{health:<8}\x1b[0m")
        } else {
            format!("{health:<8}")
        };
        let label = format!("{name:<8} {weight:>6}  {health}");
        let outcome = Outcome::Served(name.to_string());
        lines.push(row(&label, counts, &outcome, recent_sum, tty));
    }
    let label = format!("{:<8} {:>6}  {:<8}", "failed", "", "");
    lines.push(row(&label, counts, &Outcome::Failed, recent_sum, tty));
}

fn row(label: &str, counts: &Snapshot, outcome: &Outcome, recent_sum: u64, tty: bool) -> String {
    let recent = counts.recent.get(outcome).copied().unwrap_or(0);
    let total = counts.total.get(outcome).copied().unwrap_or(0);
    let share = if recent_sum == 0 {
        0.0
    } else {
        recent as f64 / recent_sum as f64
    };
    // Rounded to whole characters; a share above zero always shows.
    let mut filled = ((share * BAR as f64).round() as usize).min(BAR);
    if recent > 0 {
        filled = filled.max(1);
    }
    let (full, empty) = if tty { ('█', '░') } else { ('#', '.') };
    let bar: String = std::iter::repeat_n(full, filled)
        .chain(std::iter::repeat_n(empty, BAR - filled))
        .collect();
    format!("    {label} {bar} {:>3.0}% {total:>8}", share * 100.0)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_panel_shows_shares_and_health_without_escapes_off_a_terminal() {
        let mut web = Snapshot {
            window: Duration::from_secs(2),
            ..Snapshot::default()
        };
        web.recent.insert(Outcome::Served("web-1".into()), 300);
        web.recent.insert(Outcome::Served("web-2".into()), 100);
        web.total.insert(Outcome::Served("web-1".into()), 1000);
        let status: Status = serde_json::from_str(
            r#"{"config_version": 2, "pools": [{"name": "web", "backends": [
                {"name": "web-1", "weight": 3, "healthy": true, "drained": false},
                {"name": "web-2", "weight": 1, "healthy": false, "drained": false}]}]}"#,
        )
        .expect("status");
        let lines = panel(&web, &Snapshot::default(), Some(&status), false);
        let text = lines.join("\n");
        assert!(!text.contains('\x1b'), "{text}");
        let web1 = lines.iter().find(|l| l.contains("web-1")).expect("web-1");
        assert!(web1.contains("      3  healthy"), "{web1}");
        assert!(web1.contains(" 75%     1000"), "{web1}");
        let bar = format!("{}{}", "#".repeat(18), ".".repeat(6));
        assert!(web1.contains(&bar), "{web1}");
        let web2 = lines.iter().find(|l| l.contains("web-2")).expect("web-2");
        assert!(web2.contains("DOWN") && web2.contains(" 25%"), "{web2}");
        assert!(text.contains("200/s"), "{text}");
        for line in &lines {
            assert!(line.chars().count() <= PANEL_WIDTH, "too wide: {line:?}");
        }
    }

    #[test]
    fn messages_wrap_at_spaces_and_keep_their_indentation() {
        assert_eq!(wrap("aaa bbb ccc", 7), ["aaa bbb", "ccc"]);
        assert_eq!(wrap("  aaa bbb", 7), ["  aaa", "  bbb"]);
        assert_eq!(
            wrap("averyveryverylongword x", 5),
            ["averyveryverylongword", "x"]
        );
        assert_eq!(wrap("", 5), [""]);
    }
}
