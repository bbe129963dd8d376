//! Where log lines go: stderr (coloured on a terminal); under systemd
//! (`JOURNAL_STREAM` set, stderr being that stream) each line starts with
//! its syslog priority (`<3>` for errors, sd-daemon(3)), so the journal
//! files it right; with `--syslog`, to the local syslog socket (`/dev/log`,
//! RFC 3164 lines, facility `mail`).

use std::io::IsTerminal as _;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::format::{Format, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// Where lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// stderr, as written.
    Stderr,
    /// stderr with a priority prefix per line (systemd's journal).
    Journal,
    /// The syslog socket.
    Syslog,
}

impl Target {
    /// The journal when stderr is its stream, else stderr; `syslog` wins.
    pub fn choose(syslog: bool) -> Target {
        if syslog {
            Target::Syslog
        } else if under_journal() {
            Target::Journal
        } else {
            Target::Stderr
        }
    }
}

/// True when stderr is the stream `JOURNAL_STREAM` names (device:inode).
fn under_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else { return false };
    let Some((dev, ino)) = v.to_str().and_then(|s| s.split_once(':')) else { return false };
    let Ok(meta) = rustix::fs::fstat(std::io::stderr()) else { return false };
    dev.parse::<u64>().ok() == Some(meta.st_dev) && ino.parse::<u64>().ok() == Some(meta.st_ino)
}

/// The syslog severity of a level.
fn severity(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// Sets up the global subscriber with `filter` (`SSHMAIL_LOG` wins) and
/// whether to name each line's module.
pub fn init(target: Target, default_filter: &str, with_target: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SSHMAIL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let format = Format::default().without_time().with_target(with_target);
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match target {
        Target::Stderr => builder
            .with_ansi(std::io::stderr().is_terminal())
            .event_format(format)
            .with_writer(std::io::stderr)
            .try_init(),
        Target::Journal => {
            builder.with_ansi(false).event_format(Prioritised(format)).with_writer(std::io::stderr).try_init()
        }
        Target::Syslog => builder.with_ansi(false).event_format(format).with_writer(Syslog::open()).try_init(),
    };
}

/// A format that starts each line with `<N>`, its syslog priority.
struct Prioritised<F>(F);

impl<S, N, F> FormatEvent<S, N> for Prioritised<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "<{}>", severity(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

/// Lines to the syslog socket, one datagram each; stderr when there is none.
#[derive(Clone)]
struct Syslog {
    socket: Option<Arc<UnixDatagram>>,
}

impl Syslog {
    /// The socket is `/dev/log` (`SSHMAIL_SYSLOG_SOCKET` names another, for
    /// tests).
    fn open() -> Syslog {
        let path = std::env::var_os("SSHMAIL_SYSLOG_SOCKET").unwrap_or_else(|| "/dev/log".into());
        let socket = UnixDatagram::unbound().ok().filter(|s| s.connect(&path).is_ok());
        if socket.is_none() {
            eprintln!("sshmail: no syslog at {}; logging to stderr", std::path::Path::new(&path).display());
        }
        Syslog { socket: socket.map(Arc::new) }
    }
}

/// One line being written.
struct Line {
    socket: Option<Arc<UnixDatagram>>,
    severity: u8,
    buf: Vec<u8>,
}

impl std::io::Write for Line {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buf);
        let text = text.trim_end();
        if text.is_empty() {
            return;
        }
        match &self.socket {
            Some(s) => {
                // Facility mail (2).
                let line = format!("<{}>sshmail[{}]: {text}", 2 * 8 + self.severity, std::process::id());
                let _ = s.send(line.as_bytes());
            }
            None => eprintln!("{text}"),
        }
    }
}

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line { socket: self.socket.clone(), severity: 6, buf: Vec::new() }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line {
        Line { socket: self.socket.clone(), severity: severity(meta.level()), buf: Vec::new() }
    }
}

/// Lets one line of a kind through per [`Throttle::EVERY`], counting the
/// rest: a flood of refused connections makes a line every few seconds
/// with a count, not a line per connection.
pub struct Throttle {
    last: std::sync::Mutex<Option<std::time::Instant>>,
    held_back: std::sync::atomic::AtomicU64,
}

impl Throttle {
    /// How often a line gets through.
    pub const EVERY: std::time::Duration = std::time::Duration::from_secs(10);

    /// A throttle that lets the first line through.
    pub const fn new() -> Throttle {
        Throttle { last: std::sync::Mutex::new(None), held_back: std::sync::atomic::AtomicU64::new(0) }
    }

    /// Some(lines held back since the last one) when this line may be
    /// logged; None when it is only counted.
    pub fn allow(&self) -> Option<u64> {
        let now = std::time::Instant::now();
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match *last {
            Some(at) if now.duration_since(at) < Self::EVERY => {
                self.held_back.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                None
            }
            _ => {
                *last = Some(now);
                Some(self.held_back.swap(0, std::sync::atomic::Ordering::Relaxed))
            }
        }
    }

    /// `" (and N more like it)"` for a count held back, or nothing.
    pub fn more(held_back: u64) -> String {
        match held_back {
            0 => String::new(),
            n => format!(" ({n} more like it in the last {} s, not logged)", Self::EVERY.as_secs()),
        }
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new()
    }
}

#[cfg(test)]
mod tests {
    use super::Throttle;

    #[test]
    fn a_flood_of_refusals_logs_one_line_with_a_count() {
        let t = Throttle::new();
        assert_eq!(t.allow(), Some(0));
        for _ in 0..100 {
            assert_eq!(t.allow(), None);
        }
        *t.last.lock().unwrap() = Some(std::time::Instant::now() - Throttle::EVERY);
        assert_eq!(t.allow(), Some(100));
        assert!(Throttle::more(100).contains("100 more"));
        assert_eq!(Throttle::more(0), "");
    }
}
