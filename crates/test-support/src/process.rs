//! Child processes and their files: console logs, stopping, temp dirs, log tails.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Numbers the temp dirs of one test process.
pub(crate) static DIR_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A server's console log opened for appending, twice (its stdout and its stderr).
pub(crate) fn console_files(path: &Path) -> Result<(fs::File, fs::File), String> {
    let console = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("console log: {e}"))?;
    let again = console
        .try_clone()
        .map_err(|e| format!("console log: {e}"))?;
    Ok((console, again))
}

/// SIGTERM to `child`, up to 5 s for it to exit, then SIGKILL; `None` after. Idempotent.
pub(crate) async fn terminate(child: &mut Option<Child>) {
    let Some(running) = child.as_mut() else {
        return;
    };
    let _ = Command::new("kill")
        .args(["-TERM", &running.id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = running.try_wait() {
            *child = None;
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kill_child(child);
}

/// SIGKILL to `child` and reap it; `None` after. Idempotent.
pub(crate) fn kill_child(child: &mut Option<Child>) {
    if let Some(mut running) = child.take() {
        let _ = running.kill();
        let _ = running.wait();
    }
}

pub(crate) async fn tcp_open(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

pub(crate) fn unique_dir() -> PathBuf {
    let test = std::thread::current()
        .name()
        .map(sanitize)
        .unwrap_or_default();
    loop {
        let n = DIR_COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "cpim-xmpp-{}-{n}-{}",
            std::process::id(),
            test.chars().take(60).collect::<String>()
        ));
        match fs::create_dir(&dir) {
            Ok(()) => return dir,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("create {}: {e}", dir.display()),
        }
    }
}

pub(crate) fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub(crate) fn tail_of_file(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| format!("({}: {e})", path.display()));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
