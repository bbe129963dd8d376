//! systemd's notification protocol (`Type=notify`): a datagram to
//! `$NOTIFY_SOCKET` saying the daemon is ready, reloading or stopping, so
//! that `systemctl --user status` is truthful. Without the variable
//! (not under systemd) nothing is sent.

/// Sends `state` (`READY=1`, `RELOADING=1`, `STOPPING=1`, …).
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET").filter(|p| !p.is_empty()) else { return };
    let Ok(socket) = std::os::unix::net::UnixDatagram::unbound() else { return };
    let message = if state == "RELOADING=1" {
        // systemd 253 and later want the time of the reload with it.
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let usec = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1000;
        format!("{state}\nMONOTONIC_USEC={usec}")
    } else {
        state.to_string()
    };
    let sent = match path.as_encoded_bytes().strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt as _;
            std::os::unix::net::SocketAddr::from_abstract_name(name)
                .and_then(|a| socket.send_to_addr(message.as_bytes(), &a))
        }
        None => socket.send_to(message.as_bytes(), &path),
    };
    if let Err(e) = sent {
        tracing::debug!("cannot notify systemd ({state}): {e}");
    }
}
