//! Helpers shared by the gateway's integration tests: child processes that are always
//! stopped, free loopback ports, the `cpim-gateway run` process, SIP text helpers.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[allow(unused_imports)] // not every test binary picks ports
pub use cpim_test_support::net::free_port;

/// A child process killed (SIGKILL) and reaped when dropped.
pub struct Guard(pub Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A header of a SIP message (first occurrence, case-insensitive name).
pub fn sip_header(msg: &str, name: &str) -> Option<String> {
    let head = msg.split("\r\n\r\n").next()?;
    head.split("\r\n").skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// The body of a SIP message.
pub fn sip_body(msg: &str) -> &str {
    msg.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// A response to `request` with `status`: Via, From, To (a tag added), Call-ID and CSeq
/// copied, `extra` header lines, no body.
pub fn sip_reply(request: &str, status: u16, extra: &str) -> String {
    let head = request.split("\r\n\r\n").next().unwrap_or_default();
    let mut out = format!("SIP/2.0 {status} Answer\r\n");
    for line in head.split("\r\n").skip(1) {
        let name = line
            .split(':')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if name == "to" && !line.contains("tag=") {
            out.push_str(line);
            out.push_str(";tag=phone1\r\n");
        } else if ["via", "from", "to", "call-id", "cseq"].contains(&name.as_str()) {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str(extra);
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

/// A `cpim-gateway run --config FILE` process; killed when dropped.
pub struct GatewayProcess {
    guard: Guard,
    config: PathBuf,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl GatewayProcess {
    /// Writes `config` to `dir/gateway.toml`, starts the gateway and waits until its
    /// log (stderr) has shown every one of `ready`.
    pub fn start(dir: &Path, config: &str, ready: &[&str]) -> GatewayProcess {
        let file = dir.join("gateway.toml");
        std::fs::write(&file, config).expect("config");
        let (guard, lines) = spawn(&file);
        let mut gw = GatewayProcess {
            guard,
            config: file,
            lines,
            log: Vec::new(),
        };
        gw.wait_for(ready, Duration::from_secs(20));
        gw
    }

    /// Waits until every needle appeared in the log of this run.
    pub fn wait_for(&mut self, needles: &[&str], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !needles
            .iter()
            .all(|needle| self.log.iter().any(|l| l.contains(needle)))
        {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| {
                    panic!(
                        "the gateway did not log {needles:?}:\n{}",
                        self.log.join("\n")
                    )
                });
            match self.lines.recv_timeout(left) {
                Ok(line) => self.log.push(line),
                Err(_) => panic!(
                    "the gateway did not log {needles:?}:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// The log lines read so far (this run).
    pub fn log(&mut self) -> &[String] {
        while let Ok(line) = self.lines.try_recv() {
            self.log.push(line);
        }
        &self.log
    }

    /// SIGKILL: the process dies at once, nothing is flushed or said goodbye to.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.guard.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait (up to 20 s) for a clean exit; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.guard.0.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Starts the same configuration again (after [`kill9`](Self::kill9) or
    /// [`terminate`](Self::terminate)) and waits for `ready`.
    pub fn restart(&mut self, ready: &[&str]) {
        self.kill9();
        let (guard, lines) = spawn(&self.config);
        self.guard = guard;
        self.lines = lines;
        self.log.clear();
        self.wait_for(ready, Duration::from_secs(20));
    }
}

fn spawn(config: &Path) -> (Guard, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cpim-gateway"))
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the gateway runs");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (Guard(Some(child)), lines)
}

/// `POST /v1/messages` with `body` as app token `token` on the webhook API at
/// `127.0.0.1:api`, by curl (a real HTTP client), with an `Idempotency-Key` when given;
/// the HTTP status as curl printed it.
pub async fn post_message(
    api: u16,
    token: &str,
    body: &serde_json::Value,
    key: Option<&str>,
) -> String {
    let mut curl = tokio::process::Command::new("curl");
    curl.args([
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "3",
    ])
    .args(["-X", "POST", &format!("http://127.0.0.1:{api}/v1/messages")])
    .args(["-H", &format!("Authorization: Bearer {token}")])
    .args(["-H", "Content-Type: application/json"]);
    if let Some(key) = key {
        curl.args(["-H", &format!("Idempotency-Key: {key}")]);
    }
    let out = curl
        .args(["-d", &body.to_string()])
        .output()
        .await
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
