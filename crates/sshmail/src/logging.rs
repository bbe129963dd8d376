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
