//! Kamailio (the Debian package) as the SIP proxy and registrar in front of the gateway,
//! on loopback (test support). It record-routes every dialog-creating request, keeps
//! registrations in memory, relays requests for `sip.test` users to where they
//! registered and everything else to the gateway, and refuses an in-dialog request that
//! does not follow the route set with `404 Not here`, as Kamailio's default
//! configuration does.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary of Debian's `kamailio` package.
pub const KAMAILIO: &str = "/usr/sbin/kamailio";

/// A running Kamailio, stopped (with its children) when dropped.
#[derive(Debug)]
pub struct Kamailio {
    child: Child,
    dir: PathBuf,
    /// Where it listens (UDP).
    pub addr: SocketAddr,
}

impl Kamailio {
    /// Starts Kamailio on UDP `port` of 127.0.0.1 (see [`super::free_port`]) serving
    /// `domain`, relaying what is not for `domain` to `gateway`. Waits until it answers
    /// OPTIONS.
    pub fn start(port: u16, domain: &str, gateway: SocketAddr) -> Kamailio {
        assert!(
            std::path::Path::new(KAMAILIO).exists(),
            "kamailio is installed (scripts/setup.sh)"
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let dir = std::env::temp_dir().join(format!("cpim-kamailio-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("kamailio.cfg");
        std::fs::write(&cfg, config(domain, port, gateway)).unwrap();
        let log = std::fs::File::create(dir.join("kamailio.log")).unwrap();
        let child = Command::new(KAMAILIO)
            .arg("-f")
            .arg(&cfg)
            .args(["-DD", "-E", "-m", "32", "-M", "8"])
            .arg("-Y")
            .arg(&dir)
            .arg("-P")
            .arg(dir.join("kamailio.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("kamailio starts");
        let k = Kamailio { child, dir, addr };
        k.wait_ready();
        k
    }

    /// What Kamailio logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("kamailio.log")).unwrap_or_default()
    }

    fn wait_ready(&self) {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let me = socket.local_addr().unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut buf = [0u8; 4096];
        for n in 0.. {
            let options = format!(
                "OPTIONS sip:{} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKkready{n}\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:probe@{me}>;tag=k{n}\r\nTo: <sip:{}>\r\n\
                 Call-ID: kready{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
                self.addr, self.addr
            );
            let _ = socket.send_to(options.as_bytes(), self.addr);
            if let Ok((len, _)) = socket.recv_from(&mut buf) {
                if buf[..len].starts_with(b"SIP/2.0 200") {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "kamailio answers OPTIONS within 15 s:\n{}",
                self.log()
            );
        }
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        // SIGTERM to the main process stops its children too.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_dir_all(&self.dir);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn config(domain: &str, port: u16, gateway: SocketAddr) -> String {
    format!(
        r#"#!KAMAILIO
debug=2
log_stderror=yes
fork=yes
children=1
listen=udp:127.0.0.1:{port}
disable_tcp=yes
auto_aliases=no
alias={domain}
alias=127.0.0.1:{port}
dns=no
rev_dns=no
use_dns_cache=off
dns_try_naptr=no
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"

loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"

modparam("usrloc", "db_mode", 0)
modparam("tm", "fr_timer", 3000)

request_route {{
	if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
	xlog("L_INFO", "in: $rm $ru from $si:$sp\n");
	if (has_totag()) {{
		# Kamailio's default WITHINDLG: only what follows the route set goes on.
		if (loose_route()) {{
			xlog("L_INFO", "in dialog: $rm $ru -> $du\n");
			if (!t_relay()) {{ xlog("L_INFO", "relay failed: $rm $ru\n"); sl_reply_error(); }}
			exit;
		}}
		if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
		sl_send_reply("404", "Not here");
		exit;
	}}
	if (is_method("OPTIONS") && uri == myself && $rU == $null) {{
		sl_send_reply("200", "OK");
		exit;
	}}
	if (is_method("REGISTER")) {{
		save("location");
		exit;
	}}
	if (is_method("SUBSCRIBE|NOTIFY|MESSAGE|PUBLISH")) {{
		record_route();
	}}
	if ($rd == "{domain}") {{
		if (!lookup("location")) {{ sl_send_reply("404", "Not Found"); exit; }}
		t_relay();
		exit;
	}}
	$du = "sip:{gateway}";
	t_relay();
	exit;
}}

onreply_route {{
	xlog("L_INFO", "reply: $rs $rm from $si:$sp\n");
}}
"#
    )
}
