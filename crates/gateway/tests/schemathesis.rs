//! schemathesis (PyPI, installed by scripts/setup.sh) against the live webhook API and its
//! own `/v1/openapi.json`: no 5xx, and every response matches the document (status code,
//! content type, schema). `GET /v1/events` is left out: it is a Server-Sent Events stream
//! that never ends, which schemathesis cannot read; tests/server.rs in crates/webhook
//! covers it.

#![allow(clippy::disallowed_methods)] // tests wait with deadlines and measure

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let dir = std::env::temp_dir().join(format!("cpim-schemathesis-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[adapters.webhook]\ntype = \"webhook\"\nlisten = \"127.0.0.1:{port}\"\n\n\
             [[adapters.webhook.apps]]\nname = \"demo\"\ndomains = [\"app.test\"]\n\
             token = \"schemathesis-token-0123\"\n"
        ),
    )
    .expect("config");
    let gateway = Guard(
        Command::new(env!("CARGO_BIN_EXE_cpim-gateway"))
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the gateway runs"),
    );
    let up = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "the webhook API did not start");
    // scripts/setup.sh installs it in the project's own virtual environment;
    // CPIM_SCHEMATHESIS names another one.
    let program = std::env::var_os("CPIM_SCHEMATHESIS").unwrap_or_else(|| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv/bin/schemathesis").into()
    });
    let output = Command::new(&program)
        // Its cache goes to the test's own directory, not into the source tree.
        .current_dir(&dir)
        .arg("run")
        .arg(format!("http://127.0.0.1:{port}/v1/openapi.json"))
        .args(["-H", "Authorization: Bearer schemathesis-token-0123"])
        .args([
            "-c",
            "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance",
        ])
        .args(["-n", "30", "--exclude-path", "/v1/events", "--request-timeout", "5"])
        .args(["--seed", "1"])
        .output()
        .unwrap_or_else(|e| {
            panic!("schemathesis is installed at {program:?} (scripts/setup.sh): {e}")
        });
    drop(gateway);
    let _ = std::fs::remove_dir_all(&dir);
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "schemathesis failed:\n{report}");
    assert!(report.contains("passed"), "{report}");
}
