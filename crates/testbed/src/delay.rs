//! A delaying TCP proxy, to measure at a distance on loopback (this kernel
//! has no `netem`): every chunk read is held for half the round trip in
//! its direction before it is written, in order; the bandwidth can be
//! capped, the delay jittered (order kept), and the link stalled now and
//! then (nothing passes for a while, then everything held does).
//!
//! What it models: latency, a bandwidth limit, stalls. What it cannot:
//! packet loss and TCP's reaction to it (the kernel's loopback TCP below
//! never loses a segment), nor a congestion window growing over a lossy
//! path.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// What the link does.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    /// The round trip added (half each way).
    pub rtt: Duration,
    /// The most bytes a second each way; None: no cap.
    pub rate: Option<u64>,
    /// Up to this much more delay per chunk, at random (order kept).
    pub jitter: Duration,
    /// A stall this often…
    pub stall_every: Option<Duration>,
    /// …lasting this long.
    pub stall_for: Duration,
}

/// Parses `200ms`, `2s`, `1.5s`.
pub fn duration(s: &str) -> Result<Duration> {
    let (number, unit) = match s.strip_suffix("ms") {
        Some(n) => (n, 0.001),
        None => (s.strip_suffix('s').with_context(|| format!("{s}: give ms or s"))?, 1.0),
    };
    let v: f64 = number.parse().with_context(|| format!("{s}: not a duration"))?;
    Ok(Duration::from_secs_f64(v * unit))
}

/// Parses a rate: `10mbit`, `1mbyte`, or bytes a second.
pub fn rate(s: &str) -> Result<u64> {
    let (n, scale) = if let Some(n) = s.strip_suffix("mbit") {
        (n, 1_000_000.0 / 8.0)
    } else if let Some(n) = s.strip_suffix("kbit") {
        (n, 1000.0 / 8.0)
    } else if let Some(n) = s.strip_suffix("mbyte") {
        (n, 1_000_000.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = n.parse().with_context(|| format!("{s}: not a rate"))?;
    if v <= 0.0 {
        bail!("{s}: a rate must be positive");
    }
    Ok((v * scale) as u64)
}

/// Listens on `listen` (port 0: any), prints the port it got on stdout,
/// and carries each connection to `to` through the profile's link, until
/// the process is ended.
pub fn serve(listen: &str, to: &str, profile: Profile) -> Result<()> {
    let listener = TcpListener::bind(listen).with_context(|| format!("cannot listen on {listen}"))?;
    println!("{}", listener.local_addr()?.port());
    std::io::stdout().flush()?;
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        let to = to.to_string();
        std::thread::spawn(move || {
            if let Ok(server) = TcpStream::connect(&to) {
                carry(client, server, profile);
            }
        });
    }
    Ok(())
}

/// Both directions of one connection.
fn carry(client: TcpStream, server: TcpStream, profile: Profile) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let started = Instant::now();
    let (c2, s2) = match (client.try_clone(), server.try_clone()) {
        (Ok(c), Ok(s)) => (c, s),
        _ => return,
    };
    let up = std::thread::spawn(move || direction(client, server, profile, started, 1));
    direction(s2, c2, profile, started, 2);
    let _ = up.join();
}

/// One direction: a reader that stamps each chunk as it arrives, and a
/// writer that holds it until its time.
fn direction(mut from: TcpStream, mut to: TcpStream, p: Profile, started: Instant, seed: u64) {
    let (tx, rx) = mpsc::sync_channel::<Option<(Instant, Vec<u8>)>>(4096);
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.send(None);
                    return;
                }
                Ok(n) => {
                    if tx.send(Some((Instant::now(), buf[..n].to_vec()))).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut random = seed ^ started.elapsed().as_nanos() as u64 ^ 0x9e37_79b9_7f4a_7c15;
    let mut last_due = Instant::now();
    let mut next_free = Instant::now();
    while let Ok(Some((at, chunk))) = rx.recv() {
        let mut due = at + p.rtt / 2;
        if !p.jitter.is_zero() {
            random ^= random << 13;
            random ^= random >> 7;
            random ^= random << 17;
            due += p.jitter.mul_f64((random % 1000) as f64 / 1000.0);
        }
        // Order is kept: never before the chunk ahead of it.
        due = due.max(last_due);
        last_due = due;
        if let Some(rate) = p.rate {
            due = due.max(next_free);
            next_free = due + Duration::from_secs_f64(chunk.len() as f64 / rate as f64);
        }
        due = after_stalls(due, started, &p);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        if to.write_all(&chunk).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = reader.join();
}

/// `due`, moved past a stall it falls in.
fn after_stalls(due: Instant, started: Instant, p: &Profile) -> Instant {
    let Some(every) = p.stall_every else { return due };
    if every.is_zero() || p.stall_for.is_zero() {
        return due;
    }
    let since = due.duration_since(started);
    let period = since.as_secs_f64() / every.as_secs_f64();
    let into = since.as_secs_f64() - period.floor() * every.as_secs_f64();
    // The stall is the last `stall_for` of each period.
    let stall_starts = every.as_secs_f64() - p.stall_for.as_secs_f64();
    if into >= stall_starts { due + Duration::from_secs_f64(every.as_secs_f64() - into) } else { due }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_rates_parse() {
        assert_eq!(duration("200ms").unwrap(), Duration::from_millis(200));
        assert_eq!(duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(rate("8mbit").unwrap(), 1_000_000);
        assert!(rate("0").is_err() && duration("2h").is_err());
    }

    /// Bytes through the proxy arrive in order, whole, and a round trip
    /// takes at least the profile's.
    #[test]
    fn a_round_trip_through_the_proxy_takes_the_profiles_and_keeps_every_byte() {
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let echo_addr = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in echo.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut r = s.try_clone().unwrap();
                    let mut w = s;
                    let _ = std::io::copy(&mut r, &mut w);
                });
            }
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = listener.local_addr().unwrap();
        let profile = Profile {
            rtt: Duration::from_millis(100),
            rate: None,
            jitter: Duration::from_millis(5),
            stall_every: None,
            stall_for: Duration::ZERO,
        };
        std::thread::spawn(move || {
            for c in listener.incoming().flatten() {
                let s = TcpStream::connect(echo_addr).unwrap();
                std::thread::spawn(move || carry(c, s, profile));
            }
        });
        let mut c = TcpStream::connect(proxy).unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let started = Instant::now();
        let writer = {
            let mut w = c.try_clone().unwrap();
            let data = data.clone();
            std::thread::spawn(move || w.write_all(&data).unwrap())
        };
        let mut back = vec![0u8; data.len()];
        c.read_exact(&mut back).unwrap();
        writer.join().unwrap();
        assert!(started.elapsed() >= Duration::from_millis(100), "{:?}", started.elapsed());
        assert!(back == data, "bytes lost or reordered");
    }
}
