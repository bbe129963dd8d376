//! Who is on the other end of a local connection.
//!
//! A Unix socket says it itself (SO_PEERCRED). A loopback TCP connection
//! does not; but both of its ends are sockets of this machine, and Linux
//! lists every socket with its owner's uid in `/proc/net/tcp` (IPv4) and
//! `/proc/net/tcp6` (IPv6): the peer's socket is the one whose local
//! address is our peer's and whose remote address is ours.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The uid that owns the socket at `peer` connected to `local`, when it
/// is listed (None: not found, e.g. it is in another network namespace or
/// already gone).
pub fn tcp_peer_uid(local: SocketAddr, peer: SocketAddr) -> std::io::Result<Option<u32>> {
    let files: &[&str] = match peer.ip() {
        IpAddr::V4(_) => &["/proc/net/tcp", "/proc/net/tcp6"],
        IpAddr::V6(_) => &["/proc/net/tcp6", "/proc/net/tcp"],
    };
    for file in files {
        let table = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if let Some(uid) = find_owner(&table, local, peer) {
            return Ok(Some(uid));
        }
    }
    Ok(None)
}

/// In a `/proc/net/tcp*` table, the uid of the socket whose own address is
/// `peer` and whose remote address is `local`.
fn find_owner(table: &str, local: SocketAddr, peer: SocketAddr) -> Option<u32> {
    table.lines().skip(1).find_map(|line| {
        let mut fields = line.split_whitespace();
        let _slot = fields.next()?;
        let own = parse_addr(fields.next()?)?;
        let remote = parse_addr(fields.next()?)?;
        if !same(own, peer) || !same(remote, local) {
            return None;
        }
        // st tx:rx tr:when retrnsmt uid
        fields.nth(4)?.parse().ok()
    })
}

/// The same address, an IPv4 one matching its IPv4-mapped IPv6 form.
fn same(a: SocketAddr, b: SocketAddr) -> bool {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    a.port() == b.port() && canon(a.ip()) == canon(b.ip())
}

/// `0100007F:0050` (IPv4) or 32 hex digits and a port (IPv6): each 32-bit
/// word is printed as the kernel holds it, in this machine's byte order.
fn parse_addr(field: &str) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |hex: &str| u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes);
    let ip = match ip.len() {
        8 => IpAddr::from(word(ip)?),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&word(&ip[i * 8..i * 8 + 8])?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex4(ip: [u8; 4]) -> String {
        format!("{:08X}", u32::from_ne_bytes(ip))
    }

    #[test]
    fn finds_the_owner_of_the_peer_socket_in_a_table() {
        let local: SocketAddr = "127.0.0.1:1143".parse().unwrap();
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let lo = hex4([127, 0, 0, 1]);
        let table = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: {lo}:0477 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1\n\
             1: {lo}:0477 {lo}:9C40 01 00000000:00000000 00:00000000 00000000  1000        0 2 1\n\
             2: {lo}:9C40 {lo}:0477 01 00000000:00000000 00:00000000 00000000 65534        0 3 1\n"
        );
        assert_eq!(find_owner(&table, local, peer), Some(65534));
        assert_eq!(find_owner(&table, local, "127.0.0.1:40001".parse().unwrap()), None);
    }

    #[test]
    fn reads_ipv6_and_mapped_addresses() {
        let v6: SocketAddr = "[::1]:8080".parse().unwrap();
        let field = format!("{}{}{}{}:1F90", "00000000", "00000000", "00000000", hex4([0, 0, 0, 1]));
        assert_eq!(parse_addr(&field), Some(v6));
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:80".parse().unwrap();
        assert!(same(mapped, "127.0.0.1:80".parse().unwrap()));
    }

    /// The real tables: a connection this process makes to itself, over
    /// IPv4 and over IPv6, is found with this process's uid.
    #[test]
    fn a_loopback_connection_of_ours_is_found_with_our_uid() {
        for at in ["127.0.0.1:0", "[::1]:0"] {
            let listener = std::net::TcpListener::bind(at).unwrap();
            let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (server, peer) = listener.accept().unwrap();
            let uid = tcp_peer_uid(server.local_addr().unwrap(), peer).unwrap();
            assert_eq!(uid, Some(rustix::process::geteuid().as_raw()), "{at}");
            drop(client);
        }
    }
}
