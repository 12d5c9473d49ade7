//! The admin HTTP listener of a running `cpim-gateway`: metrics, health, readiness,
//! reload, and a graceful stop on SIGTERM. Driven with curl, a real HTTP client.

#![allow(clippy::disallowed_methods)] // tests wait with deadlines and measure

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{free_port, Guard};

/// `curl` → (status, body).
fn curl(method: &str, url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method, url])
        .output()
        .expect("curl runs (scripts/setup.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

fn config(sip: u16, xmpp_closed: u16, api: u16, admin: u16, alias_as: &str) -> String {
    format!(
        r#"[admin]
listen = "127.0.0.1:{admin}"

[adapters.sip]
type = "sip"
domains = ["sip.test"]
listen = [{{ transport = "udp", address = "127.0.0.1:{sip}" }}]

[adapters.xmpp]
type = "xmpp"
server = "127.0.0.1:{xmpp_closed}"
user_domains = ["xmpp.test"]

[[adapters.xmpp.components]]
domain = "gw.xmpp.test"
secret = "s3cret"

[[adapters.xmpp.components]]
domain = "sip.gw.xmpp.test"
secret = "s3cret"

[adapters.webhook]
type = "webhook"
listen = "127.0.0.1:{api}"

[[adapters.webhook.apps]]
name = "demo"
domains = ["app.test"]
token = "token-0123456789abcdef"

[[aliases]]
domain = "sip.test"
on = "xmpp"
as = "{alias_as}"
"#
    )
}

fn wait_for_log(lines: &mpsc::Receiver<String>, log: &mut Vec<String>, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !log.iter().any(|l| l.contains(needle)) {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{}", log.join("\n")));
        match lines.recv_timeout(left) {
            Ok(line) => log.push(line),
            Err(_) => panic!("no {needle:?} in:\n{}", log.join("\n")),
        }
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write config");
}

#[test]
fn admin_metrics_health_readiness_reload_and_graceful_stop() {
    let dir = std::env::temp_dir().join(format!("cpim-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("gateway.toml");
    let (sip, xmpp, api, admin) = (free_port(), free_port(), free_port(), free_port());
    write(&file, &config(sip, xmpp, api, admin, "sip.gw.xmpp.test"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_cpim-gateway"))
        .args(["run", "--config"])
        .arg(&file)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the gateway runs");
    let stderr = child.stderr.take().expect("stderr");
    let pid = child.id();
    let mut guard = Guard(Some(child));
    let (tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    wait_for_log(&lines, &mut log, "admin HTTP listening");
    let base = format!("http://127.0.0.1:{admin}");

    assert_eq!(
        curl("GET", &format!("{base}/healthz")),
        (200, "ok\n".to_owned())
    );
    // No XMPP server at that port: not ready, and it says which adapter.
    let (status, body) = curl("GET", &format!("{base}/readyz"));
    assert_eq!(status, 503, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(ready["not_ready"], serde_json::json!(["xmpp"]));
    assert_eq!(ready["ready"], false);
    let (status, metrics) = curl("GET", &format!("{base}/metrics"));
    assert_eq!(status, 200);
    for line in [
        "cpim_adapter_connected{adapter=\"sip\"} 1",
        "cpim_adapter_connected{adapter=\"webhook\"} 1",
        "cpim_adapter_connected{adapter=\"xmpp\"} 0",
        "# TYPE cpim_delivery_latency_seconds histogram",
        "# TYPE cpim_received_total counter",
    ] {
        assert!(metrics.contains(line), "{line} missing in:\n{metrics}");
    }
    // Reload: a broken file is refused (422), the map stays; a good one is applied.
    write(
        &file,
        &config(sip, xmpp, api, admin, "not-a-component.xmpp.test"),
    );
    let (status, body) = curl("POST", &format!("{base}/reload"));
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("reload rejected"), "{body}");
    write(&file, &config(sip, xmpp, api, admin, "gw.xmpp.test"));
    let (status, body) = curl("POST", &format!("{base}/reload"));
    assert_eq!(status, 200, "{body}");
    let counts: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        (counts["applied"].as_u64(), counts["rejected"].as_u64()),
        (Some(1), Some(1))
    );
    // Only POST reloads.
    assert_eq!(curl("GET", &format!("{base}/reload")).0, 405);

    // SIGTERM: a clean exit with status 0.
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let mut child = guard.0.take().expect("child");
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    while let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) {
        log.push(line);
    }
    assert_eq!(status.code(), Some(0), "{}", log.join("\n"));
    assert!(
        log.iter().any(|l| l.contains("SIGTERM: stopping")),
        "{}",
        log.join("\n")
    );
    assert!(
        log.iter().any(|l| l.contains("stopped")),
        "{}",
        log.join("\n")
    );
    let _ = std::fs::remove_dir_all(&dir);
}
