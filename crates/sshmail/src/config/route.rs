//! The way to an account's server, resolved.

use super::resolve::Reach;
use super::{SshTarget, TlsSettings, Via, ssh};
use crate::error::Result;

/// How to reach an account's server: what the config says, with
/// `~/.ssh/config` applied once, when the account is resolved. Everything
/// that opens a stream to a server (a fetch, the gateway, the relay, the
/// doctor) goes through `transport::open` with one of these; nothing reads
/// the ssh_config again.
#[derive(Debug, Clone)]
pub struct Route {
    /// The SSH target and its ProxyJump hops (outermost first), for
    /// `forward` and `exec`.
    pub ssh: Option<(SshTarget, Vec<SshTarget>)>,
    /// How the stream is made.
    pub via: Via,
    /// The mail server as seen from the SSH host (forward) or from here.
    pub server_host: String,
    /// Its port.
    pub server_port: u16,
    /// TLS settings (tls, starttls).
    pub tls: TlsSettings,
    /// PREAUTH accepted on a network connection.
    pub allow_preauth: bool,
    /// The per-wait timeout.
    pub timeout: std::time::Duration,
    /// The SSH destination as written (`user@host:port` or an ssh_config
    /// Host), for people; empty without SSH.
    pub shown_ssh: String,
}

impl Route {
    /// The route `reach` describes, with `ssh_config` applied to its SSH
    /// destination and to each jump hop.
    pub(super) fn of(reach: &Reach, ssh_config: Option<&ssh2_config::SshConfig>) -> Result<Route> {
        let ssh = match reach.via {
            Via::Forward | Via::Exec(_) => {
                let t = ssh::resolve(reach, ssh_config)?;
                let jumps =
                    t.jumps.iter().map(|j| ssh::resolve_jump(j, ssh_config, reach)).collect::<Result<Vec<_>>>()?;
                Some((t, jumps))
            }
            _ => None,
        };
        let d = &reach.ssh;
        let shown_ssh = match (&d.user, d.port) {
            (Some(u), Some(p)) => format!("{u}@{}:{p}", d.host),
            (Some(u), None) => format!("{u}@{}", d.host),
            (None, Some(p)) => format!("{}:{p}", d.host),
            (None, None) => d.host.clone(),
        };
        Ok(Route {
            ssh,
            via: reach.via.clone(),
            server_host: reach.server_host.clone(),
            server_port: reach.server_port,
            tls: reach.tls.clone(),
            allow_preauth: reach.allow_preauth,
            timeout: reach.timeout,
            shown_ssh,
        })
    }

    /// A forward to `host:port` as seen from the same SSH host (another
    /// service of the account's server, its relay): no PREAUTH accepted.
    pub fn forward_to(&self, host: &str, port: u16) -> Route {
        Route {
            via: Via::Forward,
            server_host: host.to_string(),
            server_port: port,
            allow_preauth: false,
            ..self.clone()
        }
    }

    /// `host:port` of the mail server.
    pub fn server(&self) -> String {
        format!("{}:{}", self.server_host, self.server_port)
    }
}
