//! A desktop session for tests of notifications.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A desktop session for a test: Xvfb, a session bus (dbus-daemon), dunst
/// (a real notification server) and dbus-monitor recording every Notify
/// call. Ended when dropped.
pub struct Desktop {
    children: Vec<std::process::Child>,
    /// The session bus's address.
    pub bus: String,
    calls: PathBuf,
}

impl Desktop {
    /// Starts it, with its files in `dir`; returns once dunst answers.
    pub fn start(dir: &Path) -> Desktop {
        use std::io::BufRead as _;
        use std::process::{Command, Stdio};
        let mut children = Vec::new();
        let first_line = |child: &mut std::process::Child| {
            let mut line = String::new();
            std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
            line.trim().to_string()
        };
        let mut x = Command::new("Xvfb")
            .args(["-displayfd", "1", "-nolisten", "tcp"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb (scripts/install-deps)");
        let display = format!(":{}", first_line(&mut x));
        children.push(x);
        let mut bus = Command::new("dbus-daemon")
            .arg("--session")
            .arg("--nofork")
            .arg(format!("--address=unix:path={}", dir.join("bus").display()))
            .arg("--print-address=1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon (scripts/install-deps)");
        let address = first_line(&mut bus);
        children.push(bus);
        // Notifications stay until replaced or closed: a slow run sees
        // what it counts, not what timed out meanwhile.
        let dunstrc = dir.join("dunstrc");
        std::fs::write(
            &dunstrc,
            "[urgency_low]\n    timeout = 0\n[urgency_normal]\n    timeout = 0\n[urgency_critical]\n    timeout = 0\n",
        )
        .unwrap();
        let dunst = Command::new("dunst")
            .arg("-config")
            .arg(&dunstrc)
            .env("DISPLAY", &display)
            .env("DBUS_SESSION_BUS_ADDRESS", &address)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dunst (scripts/install-deps)");
        children.push(dunst);
        let calls = dir.join("notify-calls");
        let monitor = Command::new("dbus-monitor")
            .env("DBUS_SESSION_BUS_ADDRESS", &address)
            .arg("type='method_call',interface='org.freedesktop.Notifications',member='Notify'")
            .stdout(std::fs::File::create(&calls).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        children.push(monitor);
        let desktop = Desktop { children, bus: address, calls };
        let deadline = Instant::now() + Duration::from_secs(20);
        // The monitor is in once it was told of its name; dunst once it
        // answers.
        while !std::fs::read_to_string(&desktop.calls).unwrap_or_default().contains("NameLost")
            || desktop.dunstctl("displayed").is_none()
        {
            assert!(Instant::now() < deadline, "the desktop session did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        desktop
    }

    /// `dunstctl count WHAT`.
    pub fn dunstctl(&self, what: &str) -> Option<u64> {
        let out = std::process::Command::new("dunstctl")
            .args(["count", what])
            .env("DBUS_SESSION_BUS_ADDRESS", &self.bus)
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    }

    /// The Notify calls so far: (replaces_id, summary, body).
    pub fn notified(&self) -> Vec<(u32, String, String)> {
        let text = std::fs::read_to_string(&self.calls).unwrap_or_default();
        text.split("method call ")
            .skip(1)
            .map(|call| {
                // dbus-monitor prints a string's line breaks as they are:
                // the body runs from its `string "` to the `array [` after.
                let lines: Vec<&str> = call.lines().skip(1).collect();
                let string = |a: &str| a.trim().trim_start_matches("string ").trim_matches('"').to_string();
                let replaces = lines[1].trim().trim_start_matches("uint32 ").parse().unwrap();
                let end = lines.iter().position(|l| l.trim() == "array [").unwrap();
                (replaces, string(lines[3]), string(&lines[4..end].join("\n")))
            })
            .collect()
    }
}

impl Drop for Desktop {
    fn drop(&mut self) {
        for c in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
