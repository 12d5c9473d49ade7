//! RFC 4475 torture messages, bit-exact, sent to the running SIP adapter over UDP and
//! over TCP. Each gets the response listed here (or none), and the adapter still
//! answers OPTIONS afterwards. The expectations are listed message by message in
//! `docs/conformance.md`.

#![allow(clippy::disallowed_methods)] // tests wait with deadlines and measure
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use support::{header_of, status_of, take_message};

const ALLOW_405: &[&str] = &["MESSAGE", "OPTIONS", "SUBSCRIBE", "NOTIFY", "PUBLISH"];

/// What a message gets over TCP when it differs from UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tcp {
    /// The same status as over UDP; the connection stays open.
    Same,
    /// This status, then the gateway closes the connection.
    ThenClose(u16),
    /// No response while the message is incomplete; closed silently at EOF.
    Silent,
    /// These statuses in order (pipelined requests), then closed.
    Several(&'static [u16]),
}

/// `(file, UDP status or None for no response, TCP behaviour)`, registrar off, the
/// adapter serving `example.com`.
const TABLE: &[(&str, Option<u16>, Tcp)] = &[
    ("wsinv", Some(405), Tcp::Same),
    ("intmeth", Some(501), Tcp::Same),
    ("esc01", Some(405), Tcp::Same),
    ("escnull", Some(405), Tcp::Same),
    ("esc02", Some(501), Tcp::Same),
    ("lwsdisp", Some(200), Tcp::Same),
    ("longreq", Some(405), Tcp::Same),
    ("dblreq", Some(405), Tcp::Several(&[405, 405])),
    ("semiuri", Some(200), Tcp::Same),
    ("transports", Some(200), Tcp::Same),
    // multipart/signed is not a body the gateway relays: 415 with Accept.
    ("mpart01", Some(415), Tcp::Same),
    ("unreason", None, Tcp::Same),
    ("noreason", None, Tcp::Same),
    ("badinv01", Some(400), Tcp::Same),
    ("clerr", Some(400), Tcp::Silent),
    ("ncl", Some(400), Tcp::ThenClose(400)),
    ("scalar02", Some(400), Tcp::Same),
    ("scalarlg", None, Tcp::Same),
    ("quotbal", Some(400), Tcp::Same),
    ("ltgtruri", Some(400), Tcp::Same),
    ("lwsruri", Some(400), Tcp::Same),
    ("lwsstart", Some(400), Tcp::Same),
    ("trws", Some(400), Tcp::Same),
    ("escruri", Some(405), Tcp::Same),
    ("baddate", Some(405), Tcp::Same),
    ("regbadct", Some(405), Tcp::Same),
    ("badaspec", Some(400), Tcp::Same),
    ("baddn", Some(400), Tcp::Silent),
    ("badvers", Some(505), Tcp::Same),
    ("mismatch01", Some(400), Tcp::Same),
    ("mismatch02", Some(501), Tcp::Same),
    ("bigcode", None, Tcp::Same),
    ("badbranch", Some(200), Tcp::Same),
    ("insuf", Some(400), Tcp::Same),
    ("unkscm", Some(416), Tcp::Same),
    ("novelsc", Some(416), Tcp::Same),
    ("unksm2", Some(405), Tcp::Same),
    ("bext01", Some(420), Tcp::Same),
    ("invut", Some(405), Tcp::Same),
    ("regaut01", Some(405), Tcp::Same),
    ("multi01", Some(400), Tcp::Same),
    ("mcl01", Some(400), Tcp::ThenClose(400)),
    ("bcast", None, Tcp::Same),
    ("zeromf", Some(200), Tcp::Same),
    ("cparam01", Some(405), Tcp::Same),
    ("cparam02", Some(405), Tcp::Same),
    ("regescrt", Some(405), Tcp::Same),
    ("sdp01", Some(405), Tcp::Same),
    ("inv2543", Some(405), Tcp::ThenClose(400)),
    ("test", None, Tcp::Same),
];

fn file(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../../tests/vectors/rfc4475/{name}.dat",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn options(branch: &str) -> Vec<u8> {
    format!(
        "OPTIONS sip:gw@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{branch}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:t@example.com>;tag=1\r\nTo: <sip:gw@example.com>\r\n\
         Call-ID: {branch}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// Checks the headers a status requires.
fn check_headers(name: &str, response: &[u8]) {
    let status = status_of(response);
    if status == 405 || status == 501 {
        let allow = header_of(response, "Allow").unwrap_or_default();
        for m in ALLOW_405 {
            assert!(allow.contains(m), "{name}: Allow {allow:?} lacks {m}");
        }
    }
    if status == 420 {
        assert_eq!(
            header_of(response, "Unsupported").as_deref(),
            Some("nothingSupportsThis, nothingSupportsThisEither"),
            "{name}"
        );
    }
    if status == 415 {
        assert!(
            header_of(response, "Accept").is_some(),
            "{name}: 415 without Accept"
        );
    }
    assert!(
        header_of(response, "Content-Length").is_some(),
        "{name}: no Content-Length"
    );
}

async fn udp_exchange(
    socket: &UdpSocket,
    target: SocketAddr,
    bytes: &[u8],
    wait: Duration,
) -> Vec<Vec<u8>> {
    socket.send_to(bytes, target).await.unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65_536];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => {
                out.push(buf[..n].to_vec());
                // One final response is enough; wait only briefly for extras.
                if status_of(&buf[..n]) >= 200 {
                    let extra = tokio::time::timeout(
                        Duration::from_millis(100),
                        socket.recv_from(&mut buf),
                    )
                    .await;
                    if let Ok(Ok((n, _))) = extra {
                        out.push(buf[..n].to_vec());
                    }
                    return out;
                }
            }
            _ => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc4475_torture_messages_over_udp() {
    let gw = support::gateway(&["example.com"], |_| {}).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut failures = Vec::new();
    for (name, expected, _) in TABLE {
        let wait = if expected.is_some() {
            Duration::from_secs(2)
        } else {
            Duration::from_millis(300)
        };
        let got = udp_exchange(&socket, gw.udp, &file(name), wait).await;
        let finals: Vec<&Vec<u8>> = got.iter().filter(|r| status_of(r) >= 200).collect();
        match (expected, finals.first()) {
            (None, None) => {}
            (Some(code), Some(r)) if status_of(r) == *code => check_headers(name, r),
            (e, r) => failures.push(format!(
                "{name}: expected {e:?}, got {:?}",
                r.map(|r| String::from_utf8_lossy(r)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned())
            )),
        }
        // Never more than one response per request (dblreq's trailing INVITE included).
        let distinct: std::collections::HashSet<&Vec<u8>> = finals.iter().copied().collect();
        assert!(
            distinct.len() <= 1,
            "{name}: {} different responses",
            distinct.len()
        );
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // Still alive.
    let got = udp_exchange(
        &socket,
        gw.udp,
        &options("alive-udp"),
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(got.first().map(|r| status_of(r)), Some(200));
}

async fn tcp_responses(
    stream: &mut TcpStream,
    wait: Duration,
    want: usize,
    expect_close: bool,
) -> (Vec<Vec<u8>>, bool) {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 65_536];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        while let Some(m) = take_message(&mut buf) {
            out.push(m);
        }
        if out.len() >= want && want > 0 && !expect_close {
            return (out, false);
        }
        if out.len() >= want && want > 0 {
            // Give the gateway a moment to close if it is going to.
            match tokio::time::timeout(Duration::from_millis(400), stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
                Ok(Ok(n)) => {
                    buf.extend_from_slice(&chunk[..n]);
                    continue;
                }
                Err(_) => return (out, false),
            }
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return (out, false),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc4475_torture_messages_over_tcp() {
    let gw = support::gateway(&["example.com"], |_| {}).await;
    let mut failures = Vec::new();
    for (name, udp, tcp) in TABLE {
        let mut stream = TcpStream::connect(gw.tcp).await.unwrap();
        stream.write_all(&file(name)).await.unwrap();
        let (expected, close): (Vec<u16>, bool) = match (tcp, udp) {
            (Tcp::Same, Some(code)) => (vec![*code], false),
            (Tcp::Same, None) => (vec![], false),
            (Tcp::ThenClose(code), _) => (vec![*code], true),
            (Tcp::Silent, _) => (vec![], false),
            (Tcp::Several(codes), _) => (codes.to_vec(), true),
        };
        let wait = if expected.is_empty() {
            Duration::from_millis(400)
        } else {
            Duration::from_secs(3)
        };
        let (got, closed) = tcp_responses(&mut stream, wait, expected.len(), close).await;
        let statuses: Vec<u16> = got
            .iter()
            .map(|r| status_of(r))
            .filter(|s| *s >= 200)
            .collect();
        if statuses != expected {
            failures.push(format!("{name}: expected {expected:?}, got {statuses:?}"));
            continue;
        }
        for r in &got {
            check_headers(name, r);
        }
        if close && !closed {
            failures.push(format!("{name}: the connection should have been closed"));
        }
        match tcp {
            Tcp::Silent => {
                // Incomplete: end our side; the gateway discards the partial message
                // and closes without a word.
                stream.shutdown().await.unwrap();
                let (late, closed) =
                    tcp_responses(&mut stream, Duration::from_secs(3), 0, true).await;
                if !late.is_empty() || !closed {
                    failures.push(format!(
                        "{name}: expected a silent close, got {} responses, closed {closed}",
                        late.len()
                    ));
                }
            }
            _ if !close => {
                // The connection is still usable.
                stream
                    .write_all(&options(&format!("alive-{name}")))
                    .await
                    .unwrap();
                let (got, _) = tcp_responses(&mut stream, Duration::from_secs(3), 1, false).await;
                if got.first().map(|r| status_of(r)) != Some(200) {
                    failures.push(format!("{name}: OPTIONS after it was not answered"));
                }
            }
            _ => {}
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The REGISTER messages with the gateway as registrar for `example.com`: challenged
/// with 401 (Digest), or 400 where the request is wrong before authentication.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc4475_register_messages_with_the_registrar_on() {
    let gw = support::gateway(&["example.com"], |c| {
        c.registrar = vec![(
            "example.com".into(),
            vec![cpim_sip::auth::RegistrarUser {
                username: "user".into(),
                password: "pw".into(),
            }],
        )];
    })
    .await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let table: &[(&str, u16)] = &[
        ("escnull", 401),
        ("dblreq", 401),
        ("cparam01", 401),
        ("cparam02", 401),
        ("regescrt", 401),
        ("regaut01", 401),
        ("scalar02", 400),
        ("unksm2", 400),
        ("regbadct", 400),
    ];
    for (name, code) in table {
        let got = udp_exchange(&socket, gw.udp, &file(name), Duration::from_secs(2)).await;
        let r = got
            .iter()
            .find(|r| status_of(r) >= 200)
            .unwrap_or_else(|| panic!("{name}: no response"));
        assert_eq!(
            status_of(r),
            *code,
            "{name}: {}",
            String::from_utf8_lossy(r)
        );
        if *code == 401 {
            let www = header_of(r, "WWW-Authenticate").unwrap();
            assert!(www.starts_with("Digest realm=\"example.com\""), "{www}");
        }
    }
}
