//! Federation with real peers (issue 16): two `cpim-gateway run` processes federating
//! over SIP — one the gateway of an XMPP server's domain, the other of a webhook app's —
//! finding each other through dnsmasq (NAPTR `SIPS+D2T` → `_sips._tcp` SRV → A) and
//! talking SIP over TLS with certificates from a test CA, each presenting its own as a
//! client certificate (RFC 5922 §7.3) and checking the other's against the domain
//! (§7.2); `explain` and `check` of the federation settings; and XMPP s2s, a user of a
//! second Prosody reaching SIP through the gateway of the first.

#![allow(clippy::disallowed_methods)] // tests wait with deadlines

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::put;
use axum::Router;
use cpim_test_support::dnsmasq::Dnsmasq;
use cpim_test_support::net::wait_until;

use common::{free_port, GatewayProcess};

const TOKEN: &str = "federation-token-0123456789";

/// The events an app's URL received: `(from, to, text)`.
#[derive(Clone, Default)]
struct App(Arc<Mutex<Vec<(String, String, String)>>>);

async fn receive(State(app): State<App>, body: axum::body::Bytes) -> StatusCode {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    if let Ok(mut got) = app.0.lock() {
        for e in json["events"].as_array().into_iter().flatten() {
            if let (Some(from), Some(to), Some(text)) =
                (e["from"].as_str(), e["to"].as_str(), e["text"].as_str())
            {
                got.push((from.to_owned(), to.to_owned(), text.to_owned()));
            }
        }
    }
    StatusCode::OK
}

impl App {
    async fn start() -> (App, SocketAddr) {
        let app = App::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = Router::new()
            .route("/hooks/transactions/{txn}", put(receive))
            .with_state(app.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        (app, addr)
    }

    fn texts(&self) -> Vec<(String, String, String)> {
        self.0.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

/// The SIP part of one side's `gateway.toml`: SIP on UDP `udp` and TLS `tls` with the
/// certificate `name.pem`, its own domain `sip<name>.test`, `remote` as remote domains
/// found through `dns`.
fn sip_side(name: &str, remote: &[&str], udp: u16, tls: u16, dns: SocketAddr) -> String {
    let remote = remote
        .iter()
        .map(|d| format!("\"{d}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"[gateway]
data_dir = "data"

[adapters.sip]
type = "sip"
domains = ["sip{name}.test"]
listen = [
  {{ transport = "udp", address = "127.0.0.1:{udp}" }},
  {{ transport = "tls", address = "127.0.0.1:{tls}", certificate = "{name}.pem", private_key = "{name}.key" }},
]
remote_domains = [{remote}]

[adapters.sip.dns]
nameservers = ["{dns}"]

[adapters.sip.tls]
ca_file = "ca.pem"
certificate = "{name}.pem"
private_key = "{name}.key"
"#
    )
}

/// [`sip_side`] and a webhook app `name` at `app<name>.test` delivering to `hooks`.
fn app_side(
    name: &str,
    remote: &str,
    udp: u16,
    tls: u16,
    api: u16,
    hooks: SocketAddr,
    dns: SocketAddr,
) -> String {
    format!(
        r#"{sip}
[adapters.webhook]
type = "webhook"
listen = "127.0.0.1:{api}"

[[adapters.webhook.apps]]
name = "{name}"
domains = ["app{name}.test"]
token = "{TOKEN}"
url = "http://{hooks}/hooks"
"#,
        sip = sip_side(name, &[remote], udp, tls, dns)
    )
}

async fn post(api: u16, from: &str, to: &str, text: &str) -> String {
    let body = serde_json::json!({ "from": from, "to": to, "text": text });
    common::post_message(api, TOKEN, &body, None).await
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "cpim-federation-{name}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn copy(from: &Path, to: &Path, files: &[&str]) {
    for f in files {
        std::fs::copy(from.join(f), to.join(f)).expect("copy");
    }
}

/// Side A is the gateway of an XMPP server (`xmpp.test`, alice on Prosody); side B of a
/// webhook app (`appb.test`, carol). Each lists the other's domain as remote: alice's
/// message reaches carol through the two gateways (found by DNS, over verified mutual
/// TLS) and carol's reply comes back to alice; a remote domain whose server's
/// certificate names another domain is refused and alice hears it; a peer that is not
/// trusted for `xmpp.test` cannot send as its users to B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_find_each_other_in_dns_and_talk_over_verified_tls() {
    use cpim_test_support::xmpp::{MessageExtras, Prosody, ProsodyOpts, XmppClient};
    let pki = temp_dir("pki");
    cpim_test_support::pki::make(
        &pki,
        &[
            ("a", "URI:sip:xmpp.test,DNS:xmpp.test,IP:127.0.0.1"),
            ("b", "URI:sip:appb.test,DNS:appb.test,IP:127.0.0.1"),
        ],
    );
    let (udp_a, tls_a) = (free_port(), free_port());
    let (udp_b, tls_b, api_b) = (free_port(), free_port(), free_port());
    let records = |d: &str, port: u16| {
        format!(
            "naptr-record={d},10,10,s,SIPS+D2T,,_sips._tcp.{d}\n\
             srv-host=_sips._tcp.{d},edge.{d},{port},10,0\n\
             host-record=edge.{d},127.0.0.1\n"
        )
    };
    // wrong.test's server is B, whose certificate names appb.test only.
    let dns = Dnsmasq::start(
        free_port(),
        &["xmpp.test", "appb.test", "wrong.test"],
        60,
        &format!(
            "{}{}{}",
            records("xmpp.test", tls_a),
            records("appb.test", tls_b),
            records("wrong.test", tls_b)
        ),
    );
    let prosody = Prosody::start(ProsodyOpts::default()).await;
    prosody.register("alice", "alice-pass").await;
    let (app_b, hooks_b) = App::start().await;
    let dir_a = temp_dir("a");
    let dir_b = temp_dir("b");
    copy(&pki, &dir_a, &["ca.pem", "a.pem", "a.key"]);
    copy(&pki, &dir_b, &["ca.pem", "b.pem", "b.key"]);
    let side_a = format!(
        r#"{sip}
[adapters.xmpp]
type = "xmpp"
server = "{server}"
user_domains = ["xmpp.test"]
message_type = "chat"

[[adapters.xmpp.components]]
domain = "gw.xmpp.test"
secret = "{secret}"
"#,
        sip = sip_side("a", &["appb.test", "wrong.test"], udp_a, tls_a, dns.addr),
        server = prosody.component_addr(),
        secret = prosody.component_secret("gw.xmpp.test"),
    );
    let _a = GatewayProcess::start(&dir_a, &side_a, &["SIP listening", "component connected"]);
    let _b = GatewayProcess::start(
        &dir_b,
        &app_side("b", "xmpp.test", udp_b, tls_b, api_b, hooks_b, dns.addr),
        &["SIP listening", "webhook API listening"],
    );

    let mut alice = XmppClient::connect(&prosody, "alice@xmpp.test", "alice-pass").await;
    alice
        .send_message(
            "carol\\40appb.test@gw.xmpp.test",
            "hello B",
            MessageExtras::default(),
        )
        .await;
    wait_until("B's app has A's message", Duration::from_secs(20), || {
        !app_b.texts().is_empty()
    })
    .await;
    let (from, to, text) = app_b.texts()[0].clone();
    assert_eq!(text, "hello B");
    assert!(from.contains("alice@xmpp.test"), "{from}");
    assert!(to.contains("carol@appb.test"), "{to}");

    assert_eq!(
        post(api_b, "carol@appb.test", "sip:alice@xmpp.test", "hello A").await,
        "202"
    );
    let reply = alice
        .expect(
            |e| e.is_chat_body() && e.get("body") == Some("hello A"),
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(reply.sender_bare(), Some("carol\\40appb.test@gw.xmpp.test"));

    // RFC 5922 §7.2: wrong.test's server presents appb.test's certificate: refused,
    // and alice gets an error for her message.
    alice
        .send_message(
            "dave\\40wrong.test@gw.xmpp.test",
            "to the impostor",
            MessageExtras::default(),
        )
        .await;
    let error = alice
        .expect(
            |e| {
                e.get("type") == Some("error")
                    || e.xml().contains("type=\"error\"")
                    || e.xml().contains("type='error'")
            },
            Duration::from_secs(20),
        )
        .await;
    assert!(
        error
            .get("from")
            .is_some_and(|f| f.starts_with("dave\\40wrong.test@")),
        "{error}"
    );
    assert_eq!(app_b.texts().len(), 1, "{:?}", app_b.texts());

    // A stranger (127.0.0.3: neither A's address in DNS nor certified) claiming A's
    // user gets 403 from B, and B's app hears nothing of it.
    let stranger = tokio::net::UdpSocket::bind("127.0.0.3:0")
        .await
        .expect("bind");
    let body = "forged";
    let request = format!(
        "MESSAGE sip:carol@appb.test SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKforged\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@xmpp.test>;tag=x\r\nTo: <sip:carol@appb.test>\r\n\
         Call-ID: forged\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        stranger.local_addr().expect("addr"),
        body.len()
    );
    stranger
        .send_to(request.as_bytes(), ("127.0.0.1", udp_b))
        .await
        .expect("send");
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), stranger.recv_from(&mut buf))
        .await
        .expect("an answer")
        .expect("recv");
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(answer.starts_with("SIP/2.0 403"), "{answer}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app_b.texts().len(), 1, "{:?}", app_b.texts());
    alice.close().await;
    for d in [pki, dir_a, dir_b] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// `explain` of a remote domain's user: who may speak for the domain and where RFC 3263
/// finds its servers now, through the adapter's name servers.
#[test]
fn explain_shows_how_a_remote_domain_resolves_and_who_may_speak_for_it() {
    let dns = Dnsmasq::start(
        free_port(),
        &["carrier.test", "elsewhere.test"],
        60,
        "naptr-record=carrier.test,10,10,s,SIP+D2T,,_sip._tcp.carrier.test\n\
         srv-host=_sip._tcp.carrier.test,b.carrier.test,5072,20,0\n\
         srv-host=_sip._tcp.carrier.test,a.carrier.test,5071,10,0\n\
         host-record=a.carrier.test,127.0.0.1\n\
         host-record=b.carrier.test,127.0.0.2\n\
         srv-host=_sip._udp.elsewhere.test,sip.elsewhere.test,5090,10,0\n\
         host-record=sip.elsewhere.test,127.0.0.3",
    );
    let dir = temp_dir("explain");
    let config = format!(
        r#"[adapters.sip]
type = "sip"
domains = ["sip.test"]
listen = [{{ transport = "udp", address = "127.0.0.1:{}" }}]
remote_domains = ["carrier.test", "*"]
denied_domains = ["spam.test"]
trusted_peers = {{ "carrier.test" = ["192.0.2.0/24"] }}

[adapters.sip.dns]
nameservers = ["{}"]
"#,
        free_port(),
        dns.addr
    );
    std::fs::write(dir.join("gateway.toml"), config).expect("config");
    let explain = |address: &str| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_cpim-gateway"))
            .args(["explain", "--config"])
            .arg(dir.join("gateway.toml"))
            .arg(address)
            .output()
            .expect("runs");
        let out = String::from_utf8_lossy(&output.stdout).into_owned();
        assert_eq!(
            output.status.code(),
            Some(0),
            "{out}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        out
    };
    let expect = |out: &str, lines: &[&str]| {
        for expected in lines {
            assert!(out.contains(expected), "expected {expected:?} in:\n{out}");
        }
    };
    expect(
        &explain("sip:bob@carrier.test"),
        &[
            "federation on adapter sip: carrier.test is a remote SIP domain (RFC 3263)\n",
            "trusted senders: TLS peers whose certificate names carrier.test, its SIP servers in DNS, 192.0.2.0/24",
            "servers, in the order tried:\n      TCP 127.0.0.1:5071\n      TCP 127.0.0.2:5072",
        ],
    );
    // `"*"`: any other domain is a SIP user's, found in DNS the same way.
    expect(
        &explain("sip:bob@elsewhere.test"),
        &[
            "elsewhere.test is claimed by no adapter: a user of adapter sip",
            "elsewhere.test is a remote SIP domain (RFC 3263), as every domain no adapter claims",
            "servers, in the order tried:\n      UDP 127.0.0.3:5090",
        ],
    );
    expect(
        &explain("sip:bob@spam.test"),
        &["spam.test is denied (denied_domains): never reached, its users refused with 403"],
    );
    // `check` shows the trust policy.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_cpim-gateway"))
        .args(["check", "--config"])
        .arg(dir.join("gateway.toml"))
        .output()
        .expect("runs");
    let out = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{out}");
    expect(
        &out,
        &[
            "senders of sip.test: anyone who reaches the listeners",
            &format!("remote domains: carrier.test, * (every domain no adapter claims) (RFC 3263 through {})", dns.addr),
            "senders of a remote domain: a TLS peer certified for it, its SIP servers in DNS, the trusted proxies, its trusted_peers",
            "trusted_peers of carrier.test: 192.0.2.0/24",
            "denied domains: spam.test (never reached; their senders get 403)",
        ],
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// XMPP s2s: two Prosody servers federating on loopback, finding each other through
/// dnsmasq (`_xmpp-server._tcp` SRV; lua-unbound asks only it) and authenticating by
/// dialback. carol of the second server (`far.test`) writes to a SIP user through the
/// gateway attached to the first; the SIP user's reply comes back to her across s2s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_of_a_federated_xmpp_server_talks_to_a_sip_user_through_the_gateway() {
    use cpim_test_support::xmpp::{MessageExtras, Prosody, ProsodyOpts, XmppClient};
    let dns_port = free_port();
    let dns_addr = SocketAddr::from(([127, 0, 0, 1], dns_port));
    let home = Prosody::start(ProsodyOpts {
        s2s_dns: Some(dns_addr),
        ..ProsodyOpts::default()
    })
    .await;
    let far = Prosody::start(ProsodyOpts {
        host: "far.test".into(),
        components: vec![("unused.far.test".into(), "unused-secret".into())],
        s2s_dns: Some(dns_addr),
        ..ProsodyOpts::default()
    })
    .await;
    let _dns = Dnsmasq::start(
        dns_port,
        &["xmpp.test", "far.test"],
        60,
        &format!(
            "srv-host=_xmpp-server._tcp.xmpp.test,s2s.xmpp.test,{a},0,0\n\
             srv-host=_xmpp-server._tcp.gw.xmpp.test,s2s.xmpp.test,{a},0,0\n\
             srv-host=_xmpp-server._tcp.far.test,s2s.far.test,{b},0,0\n\
             host-record=s2s.xmpp.test,127.0.0.1\n\
             host-record=s2s.far.test,127.0.0.1",
            a = home.s2s_port(),
            b = far.s2s_port()
        ),
    );
    far.register("carol", "carol-pass").await;
    // The SIP side: a proxy socket that takes the gateway's MESSAGEs.
    let phone = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let sip = free_port();
    let dir = home.dir().join("gw");
    std::fs::create_dir_all(&dir).expect("dir");
    let config = format!(
        r#"[adapters.sip]
type = "sip"
domains = ["sip.test"]
listen = [{{ transport = "udp", address = "127.0.0.1:{sip}" }}]
outbound_proxy = "sip:{phone};transport=udp"

[adapters.xmpp]
type = "xmpp"
server = "{server}"
user_domains = ["xmpp.test", "far.test"]
message_type = "chat"

[[adapters.xmpp.components]]
domain = "gw.xmpp.test"
secret = "{secret}"
"#,
        phone = phone.local_addr().expect("addr"),
        server = home.component_addr(),
        secret = home.component_secret("gw.xmpp.test"),
    );
    let _gw = GatewayProcess::start(&dir, &config, &["component connected", "SIP listening"]);

    let mut carol = XmppClient::connect(&far, "carol@far.test", "carol-pass").await;
    carol
        .send_message(
            "bob\\40sip.test@gw.xmpp.test",
            "hello across s2s",
            MessageExtras::default(),
        )
        .await;
    let mut buf = vec![0u8; 65_536];
    let request = loop {
        let (n, from) = tokio::time::timeout(Duration::from_secs(20), phone.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no MESSAGE at the SIP side;\nhome:\n{}\nfar:\n{}",
                    home.log_tail(),
                    far.log_tail()
                )
            })
            .expect("recv");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.starts_with("MESSAGE ") {
            phone
                .send_to(common::sip_reply(&text, 200, "").as_bytes(), from)
                .await
                .expect("send");
            break text;
        }
    };
    assert!(request.starts_with("MESSAGE sip:bob@sip.test"), "{request}");
    assert!(
        common::sip_header(&request, "From").is_some_and(|f| f.contains("sip:carol@far.test")),
        "{request}"
    );
    assert!(
        common::sip_body(&request).contains("hello across s2s"),
        "{request}"
    );

    // Bob's reply, to the address he saw.
    let reply_body = "hello back";
    let reply = format!(
        "MESSAGE sip:carol@far.test SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKs2s1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:bob@sip.test>;tag=b1\r\nTo: <sip:carol@far.test>\r\n\
         Call-ID: s2s-reply-1\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\n\
         Content-Length: {len}\r\n\r\n{reply_body}",
        me = phone.local_addr().expect("addr"),
        len = reply_body.len()
    );
    phone
        .send_to(reply.as_bytes(), ("127.0.0.1", sip))
        .await
        .expect("send");
    let got = carol
        .expect(
            |e| e.is_chat_body() && e.get("body") == Some(reply_body),
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(got.sender_bare(), Some("bob\\40sip.test@gw.xmpp.test"));
    carol.close().await;
}
