//! `sendmail`'s command line, as its callers write it.
//!
//! - git send-email: `[-f ENVELOPE] -i RCPT…`
//! - mutt/NeoMutt: its `$sendmail` words, `-B8BITMIME`, `-f ADDR`, `-N …`,
//!   `-R …`, `--`, the recipients
//! - cron: `-FCronDaemon -i -odi -oem -oi -t [-f USER]`, or recipients on
//!   the command line
//!
//! Options may come anywhere before `--` (recipients never start with
//! `-`); a recipient argument may hold several addresses separated by
//! commas. Unknown `-o…` options are accepted and ignored (logged at
//! debug), as other sendmails do; other unknown options are an error.

/// What was asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args {
    /// `-t`: recipients from the header too.
    pub extract: bool,
    /// `-f`/`-r`: the envelope sender.
    pub sender: Option<String>,
    /// `-F`: the full name for an added `From:`.
    pub full_name: Option<String>,
    /// `-i`/`-oi`: a lone `.` does not end the message.
    pub ignore_dots: bool,
    /// `--account`.
    pub account: Option<String>,
    /// `--config`.
    pub config: Option<std::path::PathBuf>,
    /// `--no-queue`: when the relay cannot take it now, exit 75 and keep
    /// nothing.
    pub no_queue: bool,
    /// `-v`.
    pub verbose: bool,
    /// `-bp` (as `mailq`): list the queue; `-q`: flush it.
    pub mode: Mode,
    /// The recipients on the command line.
    pub recipients: Vec<String>,
}

/// What kind of run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// Send a message read from stdin.
    #[default]
    Send,
    /// List the outbox.
    List,
    /// Try everything queued now.
    Flush,
}

/// Options that take a value (attached, or the next argument) and are
/// ignored.
const IGNORED_WITH_VALUE: &[char] = &['B', 'N', 'R', 'V', 'X', 'L', 'h', 'O', 'C', 'A'];
/// Options without a value that are ignored.
const IGNORED: &[char] = &['n', 'm', 'U', 'G'];

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = args.iter().peekable();
    let value = |flag: &str, attached: &str, it: &mut std::iter::Peekable<std::slice::Iter<'_, String>>| {
        if attached.is_empty() {
            it.next().cloned().ok_or_else(|| format!("{flag} needs a value"))
        } else {
            Ok(attached.to_string())
        }
    };
    while let Some(arg) = it.next() {
        if arg == "--" {
            for rest in it.by_ref() {
                a.recipients.extend(split_recipients(rest));
            }
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let mut take = |what: &str| inline.clone().map(Ok).unwrap_or_else(|| value(what, "", &mut it));
            match name {
                "account" => a.account = Some(take("--account")?),
                "config" => a.config = Some(take("--config")?.into()),
                "no-queue" => a.no_queue = true,
                other => return Err(format!("unknown option --{other}")),
            }
            continue;
        }
        let Some(flags) = arg.strip_prefix('-').filter(|f| !f.is_empty()) else {
            a.recipients.extend(split_recipients(arg));
            continue;
        };
        let (flag, rest) = flags.split_at(flags.chars().next().map_or(0, char::len_utf8));
        match flag.chars().next().unwrap_or(' ') {
            't' if rest.is_empty() => a.extract = true,
            'i' if rest.is_empty() => a.ignore_dots = true,
            'v' if rest.is_empty() => a.verbose = true,
            'f' | 'r' => a.sender = Some(value(arg, rest, &mut it)?),
            'F' => a.full_name = Some(value(arg, rest, &mut it)?),
            'o' => {
                let option = value(arg, rest, &mut it)?;
                if option == "i" {
                    a.ignore_dots = true;
                } else {
                    tracing::debug!("ignoring sendmail option -o{option}");
                }
            }
            'b' => match rest {
                "m" | "" => {}
                "p" => a.mode = Mode::List,
                other => return Err(format!("-b{other} is not supported (only -bm, the default, and -bp)")),
            },
            'q' => a.mode = Mode::Flush,
            c if IGNORED_WITH_VALUE.contains(&c) => {
                let v = value(arg, rest, &mut it)?;
                tracing::debug!("ignoring sendmail option -{c} {v}");
            }
            c if IGNORED.contains(&c) && rest.is_empty() => tracing::debug!("ignoring sendmail option -{c}"),
            _ => return Err(format!("unknown option {arg}")),
        }
    }
    Ok(a)
}

/// `a@x, b@y` as two recipients.
fn split_recipients(arg: &str) -> Vec<String> {
    arg.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Args {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn what_git_send_email_mutt_and_cron_pass() {
        let git = p(&["-f", "dev@example.net", "-i", "a@x", "b@y"]);
        assert_eq!(git.sender.as_deref(), Some("dev@example.net"));
        assert!(git.ignore_dots && !git.extract);
        assert_eq!(git.recipients, ["a@x", "b@y"]);
        let mutt =
            p(&["-oem", "-oi", "-B8BITMIME", "-f", "me@x", "-N", "failure,delay", "-R", "hdrs", "--", "a@x", "-b@y"]);
        assert_eq!(mutt.recipients, ["a@x", "-b@y"]);
        assert!(mutt.ignore_dots);
        let cron = p(&["-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t", "-f", "root"]);
        assert_eq!(cron.full_name.as_deref(), Some("CronDaemon"));
        assert!(cron.extract && cron.ignore_dots && cron.recipients.is_empty());
        let debian_cron = p(&["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"]);
        assert_eq!(debian_cron.recipients, ["root"]);
        assert_eq!(p(&["-fme@x", "a@x, b@y"]).recipients, ["a@x", "b@y"]);
        assert_eq!(p(&["-bp"]).mode, Mode::List);
        assert_eq!(p(&["-q"]).mode, Mode::Flush);
        assert_eq!(p(&["--account", "isp", "--no-queue", "a@x"]).account.as_deref(), Some("isp"));
    }

    #[test]
    fn unknown_options_other_than_o_are_errors() {
        let bad = |args: &[&str]| parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap_err();
        assert!(bad(&["-Z"]).contains("unknown option -Z"));
        assert!(bad(&["-bs"]).contains("not supported"));
        assert!(bad(&["-f"]).contains("needs a value"));
        assert!(p(&["-oXyz", "-oQ/tmp", "a@x"]).recipients == ["a@x"]);
    }
}
