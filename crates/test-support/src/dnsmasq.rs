//! dnsmasq (Debian's `dnsmasq-base`) as the authoritative DNS server of test domains,
//! on a loopback port (test support): the NAPTR, SRV and address records a test
//! writes, nothing forwarded anywhere (`--no-resolv`), `NXDOMAIN` for any other name
//! of the test's domains, and the TTL the test asks for on every record.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary of Debian's `dnsmasq-base` package.
pub const DNSMASQ: &str = "/usr/sbin/dnsmasq";

/// A running dnsmasq, stopped when dropped.
#[derive(Debug)]
pub struct Dnsmasq {
    child: Option<Child>,
    dir: PathBuf,
    /// Where it answers (UDP and TCP).
    pub addr: SocketAddr,
}

impl Dnsmasq {
    /// Starts dnsmasq on `port` of 127.0.0.1 with the dnsmasq configuration `records`
    /// (lines such as `srv-host=_sip._tcp.a.test,sip1.a.test,5060,10,60`,
    /// `host-record=sip1.a.test,127.0.0.1`,
    /// `naptr-record=a.test,10,50,s,SIP+D2T,,_sip._tcp.a.test`), authoritative for
    /// `domains` (other names in them are NXDOMAIN) and answering with `ttl` seconds.
    /// Waits until it answers.
    pub fn start(port: u16, domains: &[&str], ttl: u32, records: &str) -> Dnsmasq {
        assert!(
            std::path::Path::new(DNSMASQ).exists(),
            "dnsmasq is installed (scripts/setup.sh: dnsmasq-base)"
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let dir = crate::process::unique_dir();
        let mut config = String::new();
        // Authoritative for the domains, so that a negative answer carries the zone's
        // SOA and is cached for its TTL too (RFC 2308), like a real zone's.
        if let Some(first) = domains.first() {
            config.push_str(&format!("auth-server=ns.{first},127.0.0.1\n"));
        }
        for domain in domains {
            config.push_str(&format!("local=/{domain}/\nauth-zone={domain}\n"));
        }
        config.push_str(records);
        config.push('\n');
        let conf = dir.join("dnsmasq.conf");
        std::fs::write(&conf, config).unwrap();
        let log = std::fs::File::create(dir.join("dnsmasq.log")).unwrap();
        let child = Command::new(DNSMASQ)
            .arg("--keep-in-foreground")
            .arg(format!("--conf-file={}", conf.display()))
            .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
            .arg(format!("--port={port}"))
            .args([
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--no-poll",
                "--user=root",
                "--log-queries",
                "--log-facility=-",
            ])
            .arg(format!("--local-ttl={ttl}"))
            .arg(format!("--neg-ttl={ttl}"))
            .arg(format!("--auth-ttl={ttl}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dnsmasq starts");
        let d = Dnsmasq {
            child: Some(child),
            dir,
            addr,
        };
        d.wait_ready();
        d
    }

    /// What dnsmasq logged so far (every query, with `--log-queries`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dnsmasq.log")).unwrap_or_default()
    }

    /// How many queries for `name` (any type) it was asked.
    pub fn queries_for(&self, name: &str) -> usize {
        self.log()
            .lines()
            .filter(|l| {
                (l.contains(" query[") || l.contains(" auth["))
                    && l.split_whitespace().any(|w| w == name)
            })
            .count()
    }

    /// Stops it now (what `drop` does), keeping its log readable.
    pub fn stop(&mut self) {
        crate::process::kill_child(&mut self.child);
    }

    fn wait_ready(&self) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        // A query for `ready.` (type A, class IN), by hand: any answer means it is up.
        let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        query.extend_from_slice(&[5, b'r', b'e', b'a', b'd', b'y', 0, 0, 1, 0, 1]);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 512];
        loop {
            let _ = socket.send_to(&query, self.addr);
            if let Ok((len, _)) = socket.recv_from(&mut buf) {
                if len >= 2 && buf[..2] == [0x12, 0x34] {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "dnsmasq answers within 10 s:\n{}",
                self.log()
            );
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        crate::process::kill_child(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
