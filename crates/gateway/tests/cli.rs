//! Runs the real `cpim-gateway` binary.

#![allow(clippy::disallowed_methods)] // tests wait with deadlines and measure

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::free_port;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs the binary in the workspace root with `args`, without the secrets' variables set
/// (unless given in `env`) and with a fixed log level.
fn gateway(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cpim-gateway"));
    command
        .args(args)
        .current_dir(workspace_root())
        .env_remove("CPIM_XMPP_SECRET")
        .env_remove("CPIM_WEBHOOK_TOKEN")
        .env("RUST_LOG", "info");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn version_prints_name_and_version() {
    let output = gateway(&["--version"], &[]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(stdout(&output).trim(), "cpim-gateway 0.1.0");
}

#[test]
fn check_sample_config_succeeds_with_a_summary() {
    let output = gateway(&["check", "--config", "gateway.toml"], &[]);
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    for expected in [
        "configuration gateway.toml is valid",
        "data dir:  data",
        "max hops:  70",
        "admin:     127.0.0.1:9090",
        "adapters:  3",
        "sip.localhost",
        "udp:127.0.0.1:5060,tcp:127.0.0.1:5060",
        "gw.xmpp.localhost,xmpp.localhost",
        "server=127.0.0.1:5347",
        "app.localhost",
        "listen=http:127.0.0.1:8080",
        "apps=demo",
        "senders: app demo (its token) as users of app.localhost only",
        "senders: as the XMPP server authenticated them (c2s, or s2s for other servers' users); messages reach users of xmpp.localhost only",
        "senders of sip.localhost: anyone who reaches the listeners (set `outbound_proxy`, `trusted_proxies` or `trusted_peers` to restrict)",
    ] {
        assert!(out.contains(expected), "expected {expected:?} in:\n{out}");
    }
    let sip_line = out
        .lines()
        .find(|line| line.trim_start().starts_with("sip "));
    assert!(
        sip_line.is_some_and(|line| line.contains("type=sip")),
        "{out}"
    );
}

#[test]
fn check_never_prints_secrets() {
    let secret = "s3cret-component-value-7d1f";
    let token = "t0ken-app-value-93ab";
    let env = [("CPIM_XMPP_SECRET", secret), ("CPIM_WEBHOOK_TOKEN", token)];
    let output = gateway(&["check", "--config", "gateway.toml"], &env);
    let all = format!("{}{}", stdout(&output), stderr(&output));
    assert!(!all.contains(secret) && !all.contains(token), "{all}");
    let (dir, file, _) = sample_on_free_ports("secrets");
    let output = run_then_sigterm(&file, true, &env, || {});
    let _ = std::fs::remove_dir_all(&dir);
    let all = format!("{}{}", stdout(&output), stderr(&output));
    assert!(all.contains("configuration loaded"), "{all}");
    assert!(!all.contains(secret) && !all.contains(token), "{all}");
}

#[test]
fn check_bad_file_exits_2_with_file_line_and_column() {
    let path = "crates/gateway/tests/data/invalid/misspelled_key.toml";
    let output = gateway(&["check", "--config", path], &[]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(stdout(&output).is_empty());
    assert!(
        err.contains(&format!(
            "{path}:9:1: adapters.sip.listn: unknown field `listn`"
        )),
        "{err}"
    );
    assert!(err.contains("`listen`") && err.contains("hint:"), "{err}");
}

#[test]
fn check_unset_variable_exits_2_with_its_name() {
    let path = "crates/gateway/tests/data/invalid/unset_variable.toml";
    let output = gateway(&["check", "--config", path], &[]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(
        err.contains("environment variable CPIM_TEST_VARIABLE_THAT_IS_NEVER_SET is not set"),
        "{err}"
    );
}

#[test]
fn check_missing_file_exits_2() {
    let output = gateway(&["check", "--config", "does-not-exist.toml"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("does-not-exist.toml: cannot read the configuration file"));
}

/// The sample configuration in a temporary directory, every listener on a free port
/// and the XMPP server on a port where nothing listens. Returns the directory, the
/// file and the SIP port.
fn sample_on_free_ports(tag: &str) -> (PathBuf, PathBuf, u16) {
    let dir = std::env::temp_dir().join(format!("cpim-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let sip = free_port();
    let text = std::fs::read_to_string(workspace_root().join("gateway.toml"))
        .expect("sample")
        .replace("127.0.0.1:5060", &format!("127.0.0.1:{sip}"))
        .replace("127.0.0.1:5347", &format!("127.0.0.1:{}", free_port()))
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{}", free_port()))
        .replace("127.0.0.1:9090", &format!("127.0.0.1:{}", free_port()));
    let file = dir.join("gateway.toml");
    std::fs::write(&file, text).expect("write");
    (dir, file, sip)
}

/// Runs `cpim-gateway [--log-format json] run --config FILE`, lets `during` talk to it,
/// then sends SIGTERM and returns what it printed.
fn run_then_sigterm(
    file: &Path,
    json: bool,
    env: &[(&str, &str)],
    during: impl FnOnce(),
) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cpim-gateway"));
    if json {
        command.args(["--log-format", "json"]);
    }
    command
        .args(["run", "--config"])
        .arg(file)
        .env_remove("CPIM_XMPP_SECRET")
        .env_remove("CPIM_WEBHOOK_TOKEN")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let child = command.spawn().expect("the binary runs");
    std::thread::sleep(std::time::Duration::from_millis(800));
    during();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait_with_output().expect("exit")
}

#[test]
fn run_sample_config_answers_sip_options_and_stops_on_sigterm() {
    let (dir, file, sip) = sample_on_free_ports("run");
    let mut answer = String::new();
    let output = run_then_sigterm(&file, false, &[], || {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(3)))
            .expect("timeout");
        let request = String::from(
            "OPTIONS sip:gw@sip.localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKcli1\r\n\
             Max-Forwards: 70\r\nFrom: <sip:t@sip.localhost>;tag=1\r\nTo: <sip:gw@sip.localhost>\r\n\
             Call-ID: cli1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        for _ in 0..20 {
            socket
                .send_to(request.as_bytes(), ("127.0.0.1", sip))
                .expect("send");
            let mut buf = [0u8; 4096];
            if let Ok(n) = socket.recv(&mut buf) {
                answer = String::from_utf8_lossy(&buf[..n]).into_owned();
                break;
            }
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
    let err = stderr(&output);
    assert!(
        answer.starts_with("SIP/2.0 200 OK\r\n"),
        "{answer:?}\n{err}"
    );
    assert!(
        answer.contains("Allow: MESSAGE, OPTIONS, SUBSCRIBE, NOTIFY, PUBLISH"),
        "{answer}"
    );
    assert_eq!(output.status.code(), Some(0), "{err}");
    assert!(err.contains("SIP listening"), "{err}");
}

#[test]
fn run_with_invalid_config_exits_2() {
    let path = "crates/gateway/tests/data/invalid/domain_collision.toml";
    let output = gateway(&["run", "--config", path], &[]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.contains("already owned by adapter `sip`"), "{err}");
}

#[test]
fn usage_error_exits_2() {
    let output = gateway(&["check"], &[]);
    assert_eq!(output.status.code(), Some(2));
}

fn vector(name: &str) -> Vec<u8> {
    std::fs::read(workspace_root().join("tests/vectors").join(name)).expect("test vector")
}

#[test]
fn translate_rfc3862_example_round_trips_byte_for_byte() {
    for name in ["rfc3862-5.1.cpim", "rfc5438-7.1.1.cpim"] {
        let path = format!("tests/vectors/{name}");
        let output = gateway(&["translate", "--from", "cpim", "--to", "cpim", &path], &[]);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        assert_eq!(output.stdout, vector(name), "{name} changed");
    }
}

#[test]
fn translate_cpim_to_json_prints_the_model() {
    let output = gateway(
        &[
            "translate",
            "--from",
            "cpim",
            "tests/vectors/rfc3862-5.1.cpim",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let json = stdout(&output);
    assert!(json.contains("\"display_name\": \"MR SANDERS\""), "{json}");
    assert!(json.contains("\"lang\": \"fr\""), "{json}");
    assert!(
        json.contains("mid:MessageFeatures@id.foo.com#VitalMessageOption"),
        "{json}"
    );
}

#[test]
fn translate_xml_formats_to_json_and_back() {
    for (format, name, needle) in [
        ("pidf", "rfc3863-4.3.1.pidf", "bs35r9"),
        ("imdn", "rfc5438-7.2.1.1.imdn", "34jk324j"),
        ("iscomposing", "rfc3994-5-active.xml", "\"refresh\": 90"),
    ] {
        let path = format!("tests/vectors/{name}");
        let output = gateway(&["translate", "--from", format, "--to", "json", &path], &[]);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        assert!(
            stdout(&output).contains(needle),
            "{format}: {}",
            stdout(&output)
        );
        let xml = gateway(&["translate", "--from", format, "--to", format, &path], &[]);
        assert_eq!(xml.status.code(), Some(0), "{}", stderr(&xml));
        assert!(stdout(&xml).contains(needle.trim_start_matches("\"refresh\": ")));
    }
}

#[test]
fn translate_captured_sip_request_to_json() {
    let path = "tests/vectors/sip/rfc3428-message.sip";
    let output = gateway(&["translate", "--from", "sip", "--to", "json", path], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let json = stdout(&output);
    assert!(json.contains("\"body\": \"Watson, come here.\""), "{json}");
    assert!(
        json.contains("\"from\": \"sip:user1@domain.com\""),
        "{json}"
    );
    let sip = gateway(&["translate", "--from", "sip", "--to", "sip", path], &[]);
    assert_eq!(sip.status.code(), Some(0), "{}", stderr(&sip));
    assert!(stdout(&sip).starts_with("MESSAGE sip:user2@domain.com SIP/2.0"));
}

#[test]
fn translate_reads_standard_input() {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_cpim-gateway"))
        .args(["translate", "--from", "cpim", "--to", "cpim", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let input = vector("rfc3862-5.1.cpim");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&input)
        .expect("write");
    let output = child.wait_with_output().expect("exit");
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(output.stdout, input);
}

#[test]
fn translate_rejects_malformed_input_with_one_line() {
    for (format, name) in [
        ("cpim", "invalid-header.cpim"),
        ("pidf", "invalid-basic.pidf"),
        ("imdn", "rfc3862-5.1.cpim"),
        ("iscomposing", "rfc3863-4.3.1.pidf"),
        ("xmpp", "rfc3862-5.1.cpim"),
        ("sip", "rfc3862-5.1.cpim"),
    ] {
        let path = format!("tests/vectors/{name}");
        let output = gateway(&["translate", "--from", format, &path], &[]);
        assert_eq!(output.status.code(), Some(1), "{format} {name}");
        assert!(output.stdout.is_empty());
        let err = stderr(&output);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.starts_with("error: invalid "), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn translate_xmpp_stanza_to_json() {
    let output = gateway(
        &[
            "translate",
            "--from",
            "xmpp",
            "tests/vectors/xmpp-message.xml",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let inbound = &json[0];
    assert_eq!(inbound["from"], "juliet@example.com/yn0cl4bnw0yr3vym");
    assert_eq!(inbound["to"], "romeo@example.net");
    assert_eq!(inbound["event"]["kind"], "message");
    assert_eq!(
        inbound["event"]["body"],
        "Art thou not Romeo, and a Montague?"
    );
    assert_eq!(inbound["event"]["lang"], "en");
    assert_eq!(inbound["event"]["thread"], "e0ffe42b");
    assert_eq!(inbound["event"]["subjects"][0]["text"], "Capulet");
    assert_eq!(inbound["event"]["receipts"]["delivered"], true);
    assert_eq!(inbound["event"]["receipts"]["displayed"], true);
    assert_eq!(inbound["protocol_ids"][0]["kind"], "xmpp.id");
    assert_eq!(inbound["protocol_ids"][0]["value"], "m-1");
}

#[test]
fn translate_xmpp_round_trip_through_the_model() {
    let output = gateway(
        &[
            "translate",
            "--from",
            "xmpp",
            "--to",
            "xmpp",
            "tests/vectors/xmpp-message.xml",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let out = stdout(&output);
    assert_eq!(out.lines().count(), 1, "{out}");
    for needle in [
        "from='juliet@example.com/yn0cl4bnw0yr3vym'",
        "to='romeo@example.net'",
        "id='gw-0000000000000001'",
        "xml:lang='en'",
        "<subject>Capulet</subject>",
        "<thread>e0ffe42b</thread>",
        "<body>Art thou not Romeo, and a Montague?</body>",
        "<request xmlns='urn:xmpp:receipts'/>",
        "<markable xmlns='urn:xmpp:chat-markers:0'/>",
    ] {
        assert!(out.contains(needle), "expected {needle:?} in {out}");
    }
}

#[test]
fn translate_xmpp_refused_stanza_names_the_condition() {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_cpim-gateway"))
        .args(["translate", "--from", "xmpp", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(
            b"<message xmlns='jabber:component:accept' from='a b@x' to='b@y'><body>hi</body></message>",
        )
        .expect("write");
    let output = child.wait_with_output().expect("exit");
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.starts_with("error: invalid XMPP stanza: jid-malformed"),
        "{err}"
    );
}

#[test]
fn translate_refuses_cross_format_conversion() {
    let output = gateway(
        &[
            "translate",
            "--from",
            "pidf",
            "--to",
            "cpim",
            "tests/vectors/rfc3863-4.3.1.pidf",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("use --to json or --to pidf"));
}

#[test]
fn translate_missing_file_is_an_error() {
    let output = gateway(
        &["translate", "--from", "cpim", "tests/vectors/nope.cpim"],
        &[],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("cannot read tests/vectors/nope.cpim"));
}

#[test]
fn explain_sip_address_shows_its_user_on_every_adapter() {
    let output = gateway(
        &[
            "explain",
            "--config",
            "gateway.toml",
            "sip:alice@sip.localhost;gr=p1",
        ],
        &[],
    );
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    for expected in [
        "on adapter sip: sip.localhost is a home domain of this adapter",
        "identity: alice@sip.localhost",
        "owner:    adapter sip",
        "instance: p1",
        "sip      sip:alice@sip.localhost;gr=p1  (home domain)",
        "webhook  im:alice@sip.localhost  (foreign home domain, as is)",
        "xmpp     alice@sip.gw.xmpp.localhost/p1  (alias domain sip.gw.xmpp.localhost)",
    ] {
        assert!(out.contains(expected), "expected {expected:?} in:\n{out}");
    }
}

#[test]
fn explain_xmpp_alias_address() {
    let output = gateway(
        &[
            "explain",
            "-c",
            "gateway.toml",
            "alice@sip.gw.xmpp.localhost",
        ],
        &[],
    );
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        out.contains(
            "on adapter xmpp: alias domain sip.gw.xmpp.localhost stands for sip.localhost"
        ),
        "{out}"
    );
    assert!(out.contains("identity: alice@sip.localhost"), "{out}");
    assert!(out.contains("owner:    adapter sip"), "{out}");
}

#[test]
fn explain_escaped_address() {
    let output = gateway(
        &[
            "explain",
            "-c",
            "gateway.toml",
            r"bot\40app.localhost@gw.xmpp.localhost",
        ],
        &[],
    );
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    for expected in [
        "on adapter xmpp: escape domain gw.xmpp.localhost",
        "identity: bot@app.localhost",
        "owner:    adapter webhook",
        "webhook  im:bot@app.localhost  (home domain)",
        "sip      sip:bot@app.localhost",
    ] {
        assert!(out.contains(expected), "expected {expected:?} in:\n{out}");
    }
}

#[test]
fn explain_unroutable_address_exits_1_with_the_reason() {
    let output = gateway(
        &["explain", "-c", "gateway.toml", "sip:carol@nowhere.example"],
        &[],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).contains("not routable: no adapter owns domain nowhere.example"));
    assert!(stderr(&output).contains(
        "error: sip:carol@nowhere.example cannot be routed: on adapter sip: no adapter owns \
         domain nowhere.example"
    ));
    let output = gateway(
        &["explain", "-c", "gateway.toml", "carol@gw.xmpp.localhost"],
        &[],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("has no @"), "{}", stderr(&output));
}

#[test]
fn explain_bad_address_exits_1_and_bad_config_exits_2() {
    let output = gateway(&["explain", "-c", "gateway.toml", "mailto:x@y"], &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("`mailto:x@y` is not an address"));
    let output = gateway(
        &[
            "explain",
            "-c",
            "/nonexistent/gateway.toml",
            "sip:a@sip.localhost",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn check_summary_lists_the_routing_rules() {
    let output = gateway(&["check", "--config", "gateway.toml"], &[]);
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    for expected in [
        "routing:   1 alias domain(s), 1 escape domain(s), 0 user entries",
        "users of sip.localhost (adapter sip):",
        "on xmpp     user@sip.gw.xmpp.localhost  (alias domain sip.gw.xmpp.localhost)",
        r"on xmpp     user\40app.localhost@gw.xmpp.localhost",
    ] {
        assert!(out.contains(expected), "expected {expected:?} in:\n{out}");
    }
}

/// Issue 13: `translate` shows the SIP ⇄ XMPP result of a capture.
#[test]
fn translate_across_sip_and_xmpp() {
    let output = gateway(
        &[
            "translate",
            "--from",
            "sip",
            "--to",
            "xmpp",
            "tests/vectors/sip/rfc3428-message.sip",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let out = stdout(&output);
    assert!(out.starts_with("<message "), "{out}");
    assert!(out.contains("<body>"), "{out}");
    let output = gateway(
        &[
            "translate",
            "--from",
            "xmpp",
            "--to",
            "sip",
            "tests/vectors/xmpp-message.xml",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let out = stdout(&output);
    assert!(
        out.starts_with("MESSAGE sip:romeo@example.net SIP/2.0\r\n"),
        "{out}"
    );
    assert!(
        out.contains("sip:juliet@example.com;gr=yn0cl4bnw0yr3vym"),
        "{out}"
    );
    assert!(out.contains("Art thou not Romeo, and a Montague?"), "{out}");
}

/// Issue 13: every connection is a file; under the usual soft limit (1 024) a few hundred
/// idle peers starved the gateway. `run` raises its soft limit to the hard one.
#[test]
fn run_raises_the_open_files_limit_to_the_hard_one() {
    let (dir, file, _sip) = sample_on_free_ports("nofile");
    let child = Command::new("/bin/sh")
        .args(["-c", "ulimit -S -n 256 && exec \"$0\" run --config \"$1\""])
        .arg(env!("CARGO_BIN_EXE_cpim-gateway"))
        .arg(&file)
        .env_remove("CPIM_XMPP_SECRET")
        .env_remove("CPIM_WEBHOOK_TOKEN")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let limits_of = |pid: u32| -> Option<(String, String)> {
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        let mut fields = line["Max open files".len()..].split_whitespace();
        Some((fields.next()?.to_owned(), fields.next()?.to_owned()))
    };
    let mut seen = None;
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        seen = limits_of(child.id());
        if matches!(&seen, Some((soft, hard)) if soft == hard) {
            break;
        }
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let output = child.wait_with_output().expect("exit");
    let _ = std::fs::remove_dir_all(&dir);
    let err = stderr(&output);
    let (soft, hard) = seen.expect("the child's limits");
    assert_ne!(
        hard, "256",
        "the hard limit is higher than the soft one set here"
    );
    assert_eq!(soft, hard, "{err}");
    assert!(err.contains("open files limit"), "{err}");
}

/// A GET on a fresh connection from `from` (127.0.0.x): the status line, or why not.
async fn http_get(from: [u8; 4], addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
        socket
            .bind(std::net::SocketAddr::from((from, 0)))
            .map_err(|e| e.to_string())?;
        let mut stream = socket.connect(addr).await.map_err(|e| e.to_string())?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(
            String::from_utf8_lossy(&answer)
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
        )
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), attempt).await {
        Ok(Ok(line)) => line,
        Ok(Err(e)) => e,
        Err(_) => "no answer within 5 s".to_owned(),
    }
}

/// Issue 13: 1 100 idle TCP connections to SIP under `ulimit -n 1024` (from 22 addresses,
/// so the per-address cap alone does not stop them). The gateway keeps its SIP stream
/// connections under the descriptor limit less a reserve, so `/healthz`, the webhook
/// API and SIP over UDP still answer while they are held, and it never runs out of
/// descriptors.
#[test]
fn eleven_hundred_idle_sip_connections_under_ulimit_1024_leave_everything_else_answering() {
    rlimit::increase_nofile_limit(8192).expect("the test may hold its sockets");
    let dir = std::env::temp_dir().join(format!("cpim-cli-flood-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (sip, admin, api) = (free_port(), free_port(), free_port());
    let text = std::fs::read_to_string(workspace_root().join("gateway.toml"))
        .expect("sample")
        .replace("127.0.0.1:5060", &format!("127.0.0.1:{sip}"))
        .replace("127.0.0.1:5347", &format!("127.0.0.1:{}", free_port()))
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{api}"))
        .replace("127.0.0.1:9090", &format!("127.0.0.1:{admin}"));
    let file = dir.join("gateway.toml");
    std::fs::write(&file, text).expect("write");
    let mut child = Command::new("/bin/sh")
        .args(["-c", "ulimit -n 1024 && exec \"$0\" run --config \"$1\""])
        .arg(env!("CARGO_BIN_EXE_cpim-gateway"))
        .arg(&file)
        .env_remove("CPIM_XMPP_SECRET")
        .env_remove("CPIM_WEBHOOK_TOKEN")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let pid = child.id();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let admin_addr = std::net::SocketAddr::from(([127, 0, 0, 1], admin));
    let api_addr = std::net::SocketAddr::from(([127, 0, 0, 1], api));
    let sip_addr = std::net::SocketAddr::from(([127, 0, 0, 1], sip));
    let checks = runtime.block_on(async {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !http_get([127, 0, 0, 1], admin_addr, "/healthz")
            .await
            .contains("200")
        {
            assert!(std::time::Instant::now() < deadline, "the gateway starts");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        // 1 100 connections, 50 per address from 127.0.0.10 on, all at once.
        let mut set = tokio::task::JoinSet::new();
        for i in 0..1100u32 {
            let from = [127, 0, 0, 10 + u8::try_from(i / 50).unwrap_or(0)];
            set.spawn(async move {
                let socket = tokio::net::TcpSocket::new_v4().ok()?;
                socket.bind(std::net::SocketAddr::from((from, 0))).ok()?;
                tokio::time::timeout(std::time::Duration::from_secs(5), socket.connect(sip_addr))
                    .await
                    .ok()?
                    .ok()
            });
        }
        let mut held = Vec::new();
        while let Some(done) = set.join_next().await {
            if let Ok(Some(stream)) = done {
                held.push(stream);
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let health = http_get([127, 0, 0, 2], admin_addr, "/healthz").await;
        let api_answer = http_get([127, 0, 0, 3], api_addr, "/v1/openapi.json").await;
        // SIP over UDP still answers.
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("udp");
        let me = udp.local_addr().expect("addr");
        let options = format!(
            "OPTIONS sip:{sip_addr} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKflood\r\n\
             Max-Forwards: 70\r\nFrom: <sip:probe@sip.localhost>;tag=f\r\nTo: <sip:{sip_addr}>\r\n\
             Call-ID: flood\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        udp.send_to(options.as_bytes(), sip_addr)
            .await
            .expect("send");
        let mut buf = vec![0u8; 4096];
        let sip_answer =
            match tokio::time::timeout(std::time::Duration::from_secs(5), udp.recv_from(&mut buf))
                .await
            {
                Ok(Ok((n, _))) => String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
                _ => "no answer".to_owned(),
            };
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
        (held.len(), health, api_answer, sip_answer, fds)
    });
    let alive = matches!(child.try_wait(), Ok(None));
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let output = child.wait_with_output().expect("exit");
    let _ = std::fs::remove_dir_all(&dir);
    let err = stderr(&output);
    let (held, health, api_answer, sip_answer, fds) = checks;
    assert_eq!(
        held, 1100,
        "every connection was made (the kernel queues them)"
    );
    assert!(alive, "the gateway is still running: {err}");
    assert!(health.contains("200"), "/healthz: {health}\n{err}");
    assert!(
        api_answer.contains("200"),
        "webhook API: {api_answer}\n{err}"
    );
    assert!(
        sip_answer.starts_with("SIP/2.0 200"),
        "SIP over UDP: {sip_answer}\n{err}"
    );
    assert!(fds < 1024, "{fds} descriptors open: the limit was reached");
    assert!(
        err.contains("max_tcp_connections"),
        "the lowered SIP cap is logged: {err}"
    );
}
