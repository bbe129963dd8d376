//! SSH servers besides OpenSSH, each on a loopback port of its own, in
//! front of a [`Testbed`]'s mail: Dropbear, and tinysshd under ucspi-tcp's
//! `tcpserver` (one session channel per connection, no TCP forwarding).
//!
//! Both read the login's `~/.ssh/authorized_keys`: the testbed's client
//! key is added there (once). Needs root for the login's home, as the
//! testbed does for its login.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::{Testbed, descendants, find_program, free_port, run_text, signal, wait_for_port};

/// A running SSH server other than the testbed's sshd.
pub struct OtherSshd {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its host key as a known_hosts line for `[127.0.0.1]:PORT`.
    pub known_hosts_line: String,
    /// Its log.
    pub log: PathBuf,
}

impl OtherSshd {
    /// Dropbear with a host key of `kind` (`ed25519`, `rsa`, `ecdsa`),
    /// password logins allowed.
    pub fn dropbear(bed: &Testbed, kind: &str) -> Result<OtherSshd> {
        let dir = bed.path().join(format!("dropbear-{kind}"));
        fs::create_dir_all(&dir)?;
        let key = dir.join("host_key");
        let made = Command::new(find_program("dropbearkey", &["/usr/bin/dropbearkey"])?)
            .args(["-t", kind, "-f"])
            .arg(&key)
            .output()
            .context("running dropbearkey (is dropbear-bin installed?)")?;
        if !made.status.success() {
            bail!("dropbearkey: {}", String::from_utf8_lossy(&made.stderr));
        }
        let public = run_text(Command::new("dropbearkey").arg("-y").arg("-f").arg(&key))?;
        let line = public
            .lines()
            .find(|l| l.starts_with("ssh-") || l.starts_with("ecdsa-"))
            .context("dropbearkey -y printed no public key")?;
        let mut fields = line.split_whitespace();
        let key_line = format!("{} {}", fields.next().unwrap_or(""), fields.next().unwrap_or(""));
        authorize(bed)?;
        let port = free_port()?;
        let log = dir.join("dropbear.log");
        let stderr = fs::File::create(&log)?;
        // -F foreground, -E log to stderr, -p the address, -r the host key.
        let child = Command::new(find_program("dropbear", &["/usr/sbin/dropbear"])?)
            .args(["-F", "-E", "-p", &format!("127.0.0.1:{port}"), "-r"])
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("starting dropbear")?;
        OtherSshd::started(child, port, &key_line, log)
    }

    /// tinysshd under `tcpserver`, with fresh ed25519 keys.
    pub fn tinysshd(bed: &Testbed) -> Result<OtherSshd> {
        let dir = bed.path().join("tinysshd");
        let keys = dir.join("keys");
        fs::create_dir_all(&dir)?;
        let made = Command::new(find_program("tinysshd-makekey", &["/usr/sbin/tinysshd-makekey"])?)
            .arg(&keys)
            .output()
            .context("running tinysshd-makekey (is tinysshd installed?)")?;
        if !made.status.success() {
            bail!("tinysshd-makekey: {}", String::from_utf8_lossy(&made.stderr));
        }
        let raw = fs::read(keys.join("ed25519.pk"))?;
        let key_line = format!("ssh-ed25519 {}", ed25519_blob(&raw));
        authorize(bed)?;
        let port = free_port()?;
        let log = dir.join("tinysshd.log");
        let stderr = fs::File::create(&log)?;
        let tinysshd = find_program("tinysshd", &["/usr/sbin/tinysshd"])?;
        let child = Command::new(find_program("tcpserver", &["/usr/bin/tcpserver"])?)
            .args(["-HRDl0", "127.0.0.1", &port.to_string()])
            .arg(tinysshd)
            .arg("-v")
            .arg(&keys)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("starting tcpserver (is ucspi-tcp installed?)")?;
        OtherSshd::started(child, port, &key_line, log)
    }

    fn started(child: Child, port: u16, key_line: &str, log: PathBuf) -> Result<OtherSshd> {
        let mut child = Some(child);
        wait_for_port(port, &mut child, &log)?;
        Ok(OtherSshd { child, port, known_hosts_line: format!("[127.0.0.1]:{port} {key_line}"), log })
    }
}

impl Drop for OtherSshd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            for pid in descendants(child.id()) {
                signal(pid, "KILL");
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The public key blob of a raw ed25519 key, base64 as known_hosts has it.
fn ed25519_blob(raw: &[u8]) -> String {
    use base64::Engine as _;
    let mut blob = Vec::new();
    for part in [&b"ssh-ed25519"[..], raw] {
        blob.extend_from_slice(&u32::try_from(part.len()).unwrap_or(0).to_be_bytes());
        blob.extend_from_slice(part);
    }
    base64::engine::general_purpose::STANDARD.encode(blob)
}

/// Adds the testbed's client key to the login's `~/.ssh/authorized_keys`
/// (once), with the owner and modes both servers insist on.
fn authorize(bed: &Testbed) -> Result<()> {
    let home = PathBuf::from(run_text(
        Command::new("sh").args(["-c", &format!("getent passwd {} | cut -d: -f6", bed.account.name)]),
    )?);
    let ssh = home.join(".ssh");
    fs::create_dir_all(&ssh)?;
    let file = ssh.join("authorized_keys");
    let line = fs::read_to_string(bed.client_key.with_extension("pub"))?;
    let have = fs::read_to_string(&file).unwrap_or_default();
    if !have.lines().any(|l| l.trim() == line.trim()) {
        let mut f = fs::OpenOptions::new().create(true).append(true).mode(0o600).open(&file)?;
        f.write_all(format!("{}\n", line.trim()).as_bytes())?;
    }
    // Both servers refuse a home, ~/.ssh or key file the login does not own.
    for path in [&home, &ssh, &file] {
        chown(path, bed)?;
    }
    fs::set_permissions(&ssh, fs::Permissions::from_mode(0o700))?;
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600))?;
    Ok(())
}

fn chown(path: &Path, bed: &Testbed) -> Result<()> {
    std::os::unix::fs::chown(path, Some(bed.account.uid), Some(bed.account.gid))
        .with_context(|| format!("chown {}", path.display()))
}
