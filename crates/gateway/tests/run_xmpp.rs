//! `cpim-gateway run` as an operator starts it: the real binary with a configuration that
//! has an XMPP adapter, against a real Prosody. It connects its component, reloads its
//! address map on SIGHUP (a bad file is rejected and the process keeps running), and
//! stops cleanly on SIGTERM.

#![allow(clippy::disallowed_methods)] // tests wait with deadlines and measure

use cpim_test_support::xmpp as support;

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::Guard;

use support::{Prosody, ProsodyOpts, COMPONENT};

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

fn wait_line(lines: &mpsc::Receiver<String>, needle: &str, seen: &mut Vec<String>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) => {
                let found = line.contains(needle);
                seen.push(line);
                if found {
                    return;
                }
            }
            Err(_) => break,
        }
    }
    panic!(
        "no log line with {needle:?}; log so far:\n{}",
        seen.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_connects_reloads_on_sighup_and_stops_on_sigterm() {
    let prosody = Prosody::start(ProsodyOpts::default()).await;
    let dir = prosody.dir().join("gateway");
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("gateway.toml");
    let text = format!(
        r#"[gateway]
data_dir = "data"

[adapters.xmpp]
type = "xmpp"
server = "{server}"
user_domains = ["xmpp.test"]
ping_interval_secs = 1

[[adapters.xmpp.components]]
domain = "{COMPONENT}"
secret = "${{TEST_COMPONENT_SECRET}}"
"#,
        server = prosody.component_addr(),
    );
    std::fs::write(&config, &text).expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cpim-gateway"))
        .args(["run", "--config"])
        .arg(&config)
        .env("TEST_COMPONENT_SECRET", prosody.component_secret(COMPONENT))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let stderr = child.stderr.take().expect("stderr");
    let pid = child.id();
    let mut guard = Guard(Some(child));
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    wait_line(&lines, "component connected", &mut seen);

    // A valid change is applied; a broken file is rejected and the gateway keeps running.
    std::fs::write(&config, format!("{text}\n[gateway2]\n")).expect("bad config");
    signal(pid, "-HUP");
    wait_line(&lines, "reload rejected", &mut seen);
    std::fs::write(&config, &text).expect("good config");
    signal(pid, "-HUP");
    wait_line(&lines, "address map reloaded", &mut seen);
    let mut child = guard.0.take().expect("child");
    assert!(child.try_wait().expect("status").is_none(), "still running");

    signal(pid, "-TERM");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("exit status");
    assert!(status.success(), "exit: {status:?}\n{}", seen.join("\n"));
}
