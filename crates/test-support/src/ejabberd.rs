//! A real ejabberd (Debian's 23.01) on loopback for the XMPP adapter's tests: its own
//! config, Mnesia spool and log in a temp dir, no Erlang distribution (no epmd, no node
//! name), stopped by the test.
//!
//! The component listener is configured the way ejabberd documents for several domains
//! on one port: `hosts:` with a password per domain (and `global_routes` at its default,
//! `true`, unless the test asks otherwise), which makes every component connection on
//! that port a route for every one of those domains.
//!
//! Accounts: external authentication by a tiny script written next to the config: any
//! user exists, and its password is `<user>-pass`.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::xmpp::{free_port, tail_of_file, tcp_open, unique_dir, XmppServer, DOMAIN, TIMEOUT};

const ERL: &str = "/usr/bin/erl";
const ERL_LIBS: &str = "/usr/lib/x86_64-linux-gnu";

/// What varies between tests.
#[derive(Debug, Clone)]
pub struct EjabberdOpts {
    /// The component domains on the one listener, with their passwords.
    pub components: Vec<(String, String)>,
    /// ejabberd's `global_routes` for that listener (its default is `true`).
    pub global_routes: bool,
}

/// A running ejabberd.
#[derive(Debug)]
pub struct Ejabberd {
    dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
    console: PathBuf,
    c2s_port: u16,
    component_port: u16,
    components: Vec<(String, String)>,
    child: Option<Child>,
}

impl XmppServer for Ejabberd {
    fn dir(&self) -> &Path {
        &self.dir
    }
    fn c2s_port(&self) -> u16 {
        self.c2s_port
    }
    fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Ejabberd {
    /// Writes the config and starts ejabberd; panics (with its log) if it does not listen
    /// on both ports within [`TIMEOUT`].
    pub async fn start(opts: EjabberdOpts) -> Ejabberd {
        let dir = unique_dir();
        let mut e = Ejabberd {
            config: dir.join("ejabberd.yml"),
            log: dir.join("ejabberd.log"),
            console: dir.join("console.log"),
            c2s_port: free_port(),
            component_port: free_port(),
            components: opts.components.clone(),
            child: None,
            dir,
        };
        fs::create_dir_all(e.dir.join("spool")).expect("spool dir");
        let extauth = e.dir.join("extauth.py");
        fs::write(&extauth, EXTAUTH).expect("write extauth");
        fs::write(&e.config, e.render(&opts, &extauth)).expect("write ejabberd.yml");
        if let Err(error) = e.spawn_and_wait().await {
            e.kill();
            panic!("ejabberd did not start: {error}");
        }
        e
    }

    /// The component listener.
    pub fn component_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.component_port))
    }

    /// The password of a component domain.
    pub fn component_secret(&self, domain: &str) -> &str {
        self.components
            .iter()
            .find(|(d, _)| d == domain)
            .map(|(_, s)| s.as_str())
            .unwrap_or_else(|| panic!("{domain} is not configured"))
    }

    /// How many TCP connections to the component listener are established now (from
    /// `/proc/net/tcp`, so it does not wait for ejabberd's buffered log).
    pub fn component_connections(&self) -> usize {
        let table = fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        let port = format!("{:04X}", self.component_port);
        table
            .lines()
            .skip(1)
            .filter(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                // local_address rem_address st: "0100007F:PORT", state 01 = ESTABLISHED.
                fields.len() > 3 && fields[2].ends_with(&format!(":{port}")) && fields[3] == "01"
            })
            .count()
    }

    /// The whole log (all runs).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, wait up to 5 s, then SIGKILL. Idempotent.
    pub async fn stop(&mut self) {
        crate::xmpp::terminate(&mut self.child).await;
    }

    /// Stops and starts again on the same ports, config and spool.
    pub async fn restart(&mut self) {
        self.stop().await;
        if let Err(error) = self.spawn_and_wait().await {
            self.kill();
            panic!("ejabberd did not restart: {error}");
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        crate::xmpp::kill_child(&mut self.child);
    }

    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        let (console, console2) = crate::xmpp::console_files(&self.console)?;
        let spool = format!("\"{}\"", self.dir.join("spool").display());
        let child = Command::new(ERL)
            .args([
                "-noinput", "-noshell", "-mnesia", "dir", &spool, "-s", "ejabberd",
            ])
            .env("EJABBERD_CONFIG_PATH", &self.config)
            .env("EJABBERD_LOG_PATH", &self.log)
            .env("ERL_LIBS", ERL_LIBS)
            .env("ERL_CRASH_DUMP", self.dir.join("erl_crash.dump"))
            .env("HOME", &self.dir)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(console)
            .stderr(console2)
            .spawn()
            .map_err(|e| format!("spawn {ERL}: {e}"))?;
        self.child = Some(child);
        let ready = format!(
            "Start accepting TCP connections at 127.0.0.1:{} for ejabberd_service",
            self.component_port
        );
        let skip = fs::metadata(&self.log)
            .map(|m| m.len() as usize)
            .unwrap_or(0);
        let deadline = Instant::now() + TIMEOUT * 2;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(format!(
                    "ejabberd exited with {status}\n{}",
                    self.diagnostics()
                ));
            }
            let log = self.log();
            let run = log.get(skip..).unwrap_or("");
            if run.contains(&ready)
                && tcp_open(SocketAddr::from((Ipv4Addr::LOCALHOST, self.c2s_port))).await
                && tcp_open(self.component_addr()).await
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("not ready in time\n{}", self.diagnostics()));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The console and the log's tail, for panic messages.
    pub fn diagnostics(&self) -> String {
        format!(
            "--- console ---\n{}\n--- ejabberd.log (tail) ---\n{}",
            tail_of_file(&self.console, 20),
            tail_of_file(&self.log, 60)
        )
    }

    fn render(&self, opts: &EjabberdOpts, extauth: &Path) -> String {
        let hosts: String = opts
            .components
            .iter()
            .map(|(domain, password)| {
                format!("      \"{domain}\":\n        password: \"{password}\"\n")
            })
            .collect();
        format!(
            r#"hosts:
  - "{DOMAIN}"
loglevel: info
log_rotate_count: 0
certfiles: []
s2s_access: none
auth_method: external
extauth_program: "/usr/bin/python3 -I {extauth}"
extauth_pool_size: 1
auth_use_cache: false
listen:
  -
    port: {c2s}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls_required: false
  -
    port: {component}
    ip: "127.0.0.1"
    module: ejabberd_service
    global_routes: {global_routes}
    hosts:
{hosts}acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
modules:
  mod_disco: {{}}
  mod_ping: {{}}
  mod_roster: {{}}
  mod_offline: {{}}
"#,
            extauth = extauth.display(),
            c2s = self.c2s_port,
            component = self.component_port,
            global_routes = opts.global_routes,
        )
    }
}

impl Drop for Ejabberd {
    fn drop(&mut self) {
        self.kill();
        if std::env::var_os("CPIM_KEEP_TEST_DIRS").is_some() {
            eprintln!("keeping ejabberd dir {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// ejabberd's external authentication protocol (2-byte big-endian length, then
/// `op:user:server[:password]`; answer 2-byte length 2 and 0 or 1): every user exists
/// and authenticates with `<user>-pass`.
const EXTAUTH: &str = r#"import struct, sys
inp, out = sys.stdin.buffer, sys.stdout.buffer
while True:
    head = inp.read(2)
    if len(head) < 2:
        break
    (n,) = struct.unpack(">H", head)
    parts = inp.read(n).decode("utf-8", "replace").split(":")
    op = parts[0]
    if op == "auth" and len(parts) >= 4:
        ok = ":".join(parts[3:]) == parts[1] + "-pass"
    else:
        ok = op in ("isuser", "setpass", "tryregister")
    out.write(struct.pack(">HH", 2, 1 if ok else 0))
    out.flush()
"#;
