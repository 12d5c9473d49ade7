//! XMPP peers for tests: a real Prosody on loopback, slixmpp clients driven over JSON
//! lines (`xmpp_client.py` beside this crate's manifest), and a raw XEP-0114 component
//! socket.
//!
//! Everything listens on 127.0.0.1 on ports picked at start (bind port 0), everything
//! connects by IP: no DNS, no TLS. Every process started here is stopped here: explicitly
//! (`Prosody::stop`, `XmppClient::close`) or on drop (SIGKILL, then reaped).
//!
//! Set `CPIM_KEEP_TEST_DIRS=1` to keep Prosody's temp dir (config, data, logs) after a
//! test; `XMPP_CLIENT_DEBUG=1` makes the slixmpp driver log to its stderr file.

use std::collections::VecDeque;
use std::fmt;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

pub use crate::net::free_port;
pub(crate) use crate::process::{
    console_files, kill_child, sanitize, tail_of_file, tcp_open, terminate, unique_dir, DIR_COUNTER,
};

/// Default bound for every wait in this module.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The user domain (VirtualHost).
pub const DOMAIN: &str = "xmpp.test";
/// The component domain always configured.
pub const COMPONENT: &str = "gw.xmpp.test";
/// Its default secret.
pub const COMPONENT_SECRET: &str = "gw-secret";

const PROSODY: &str = "/usr/bin/prosody";
const PROSODYCTL: &str = "/usr/bin/prosodyctl";
const PYTHON: &str = "/usr/bin/python3";
const CLIENT_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/xmpp_client.py");
const LOG_TAIL_LINES: usize = 60;

// ---------------------------------------------------------------------------------------
// Prosody
// ---------------------------------------------------------------------------------------

/// What to configure besides the fixed parts (VirtualHost `xmpp.test`, component
/// `gw.xmpp.test`).
#[derive(Debug, Clone)]
pub struct ProsodyOpts {
    /// Component domains with their secrets; starts with `(gw.xmpp.test, gw-secret)`.
    pub components: Vec<(String, String)>,
    /// Modules added to the minimal `modules_enabled`.
    pub extra_modules: Vec<String>,
    /// Modules added to `modules_disabled` (s2s is always disabled).
    pub disabled_modules: Vec<String>,
    /// Raw Lua appended to the global section.
    pub extra_global: String,
    /// The VirtualHost (`xmpp.test` unless set).
    pub host: String,
    /// Server-to-server: listen for s2s on a port of its own and find other servers
    /// (`_xmpp-server._tcp` SRV, address records) through this DNS server only, with
    /// dialback and without TLS. Off (s2s disabled) unless set.
    pub s2s_dns: Option<SocketAddr>,
}

impl Default for ProsodyOpts {
    fn default() -> Self {
        ProsodyOpts {
            components: vec![(COMPONENT.to_owned(), COMPONENT_SECRET.to_owned())],
            extra_modules: Vec::new(),
            disabled_modules: Vec::new(),
            extra_global: String::new(),
            host: DOMAIN.to_owned(),
            s2s_dns: None,
        }
    }
}

impl ProsodyOpts {
    /// Adds (or re-keys) a component domain.
    pub fn component(mut self, domain: &str, secret: &str) -> Self {
        self.components.retain(|(d, _)| d != domain);
        self.components.push((domain.to_owned(), secret.to_owned()));
        self
    }
}

/// A Prosody 0.12 running in the foreground on loopback with its own config and data in a
/// temp dir.
#[derive(Debug)]
pub struct Prosody {
    dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
    console: PathBuf,
    c2s_port: u16,
    component_port: u16,
    /// The s2s port, 0 without s2s.
    s2s_port: u16,
    host: String,
    components: Vec<(String, String)>,
    child: Option<Child>,
}

impl Prosody {
    /// Writes the config, starts Prosody and waits until both ports listen. Panics (with
    /// the log) when it does not come up within [`TIMEOUT`].
    pub async fn start(opts: ProsodyOpts) -> Prosody {
        let dir = unique_dir();
        let mut p = Prosody {
            config: dir.join("prosody.cfg.lua"),
            log: dir.join("prosody.log"),
            console: dir.join("console.log"),
            dir,
            c2s_port: 0,
            component_port: 0,
            s2s_port: 0,
            host: opts.host.clone(),
            components: opts.components.clone(),
            child: None,
        };
        let mut last_error = String::new();
        // A free port may be taken by someone else between our probe and Prosody's bind:
        // retry with fresh ports.
        for _attempt in 0..3 {
            p.c2s_port = free_port();
            p.component_port = free_port();
            while p.component_port == p.c2s_port {
                p.component_port = free_port();
            }
            if opts.s2s_dns.is_some() {
                p.s2s_port = free_port();
                while [p.c2s_port, p.component_port].contains(&p.s2s_port) {
                    p.s2s_port = free_port();
                }
            }
            fs::write(&p.config, p.render_config(&opts)).expect("write prosody config");
            match p.spawn_and_wait().await {
                Ok(()) => return p,
                Err(e) => {
                    p.kill();
                    let port_taken = e.starts_with("port taken");
                    last_error = e;
                    if !port_taken {
                        break;
                    }
                    let _ = fs::remove_file(&p.log);
                }
            }
        }
        drop(p); // removes the dir
        panic!("prosody did not start: {last_error}");
    }

    pub fn c2s_port(&self) -> u16 {
        self.c2s_port
    }

    /// The s2s port (0 without s2s).
    pub fn s2s_port(&self) -> u16 {
        self.s2s_port
    }

    /// The VirtualHost.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn component_port(&self) -> u16 {
        self.component_port
    }

    pub fn c2s_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.c2s_port))
    }

    pub fn component_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.component_port))
    }

    /// The secret configured for a component domain.
    pub fn component_secret(&self, domain: &str) -> &str {
        self.components
            .iter()
            .find(|(d, _)| d == domain)
            .map(|(_, s)| s.as_str())
            .unwrap_or_else(|| panic!("component {domain} is not configured"))
    }

    /// The temp dir holding config, data and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates `user@` the VirtualHost (works whether Prosody runs or not).
    pub async fn register(&self, user: &str, password: &str) {
        let out = tokio::process::Command::new(PROSODYCTL)
            .arg("--config")
            .arg(&self.config)
            .args(["register", user, &self.host, password])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(TIMEOUT, out)
            .await
            .unwrap_or_else(|_| panic!("prosodyctl register {user} timed out"))
            .expect("prosodyctl runs");
        assert!(
            out.status.success(),
            "prosodyctl register {user}@{} failed ({}):\n{}{}",
            self.host,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// SIGTERM, wait up to 5 s, then SIGKILL. Idempotent.
    pub async fn stop(&mut self) {
        terminate(&mut self.child).await;
    }

    /// Stops (if running) and starts again on the same ports with the same config and
    /// data.
    pub async fn restart(&mut self) {
        self.stop().await;
        if let Err(e) = self.spawn_and_wait().await {
            self.kill();
            panic!("prosody did not restart: {e}");
        }
    }

    /// Whether the process is still alive.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The whole Prosody log (debug level, all runs).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of the log, for panic messages.
    pub fn log_tail(&self) -> String {
        tail_of_file(&self.log, LOG_TAIL_LINES)
    }

    /// SIGKILL, no goodbye to anyone (an abrupt server death); `restart` brings it back.
    pub fn kill(&mut self) {
        kill_child(&mut self.child);
    }

    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        let (console, console2) = console_files(&self.console)?;
        let child = Command::new(PROSODY)
            .arg("-F")
            .arg("--config")
            .arg(&self.config)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(console)
            .stderr(console2)
            .spawn()
            .map_err(|e| format!("spawn {PROSODY}: {e}"))?;
        self.child = Some(child);

        let c2s = format!("Activated service 'c2s' on [127.0.0.1]:{}", self.c2s_port);
        let comp = format!(
            "Activated service 'component' on [127.0.0.1]:{}",
            self.component_port
        );
        let deadline = Instant::now() + TIMEOUT;
        // The log is appended to across restarts: only look at this run's part.
        let skip = fs::metadata(&self.log)
            .map(|m| m.len() as usize)
            .unwrap_or(0);
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(format!(
                    "prosody exited with {status}\n{}",
                    self.diagnostics()
                ));
            }
            let log = self.log();
            let run = log.get(skip..).unwrap_or("");
            if run.contains("Failed to open server port") {
                return Err(format!("port taken\n{}", self.diagnostics()));
            }
            let s2s = format!("Activated service 's2s' on [127.0.0.1]:{}", self.s2s_port);
            if run.contains(&c2s)
                && run.contains(&comp)
                && (self.s2s_port == 0 || run.contains(&s2s))
                && tcp_open(self.c2s_addr()).await
                && tcp_open(self.component_addr()).await
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "not ready after {TIMEOUT:?}\n{}",
                    self.diagnostics()
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn diagnostics(&self) -> String {
        format!(
            "--- console ---\n{}\n--- prosody.log (tail) ---\n{}",
            tail_of_file(&self.console, 20),
            self.log_tail()
        )
    }

    fn render_config(&self, opts: &ProsodyOpts) -> String {
        let path = |p: &Path| lua_str(&p.to_string_lossy());
        let mut enabled = vec!["roster", "saslauth", "disco", "ping"];
        enabled.extend(opts.extra_modules.iter().map(String::as_str));
        let mut disabled = vec!["s2s_auth_certs"];
        let s2s = match opts.s2s_dns {
            None => {
                disabled.push("s2s");
                String::new()
            }
            Some(dns) => {
                enabled.push("dialback");
                // lua-unbound asks only this server (libunbound refuses localhost
                // unless told, and answers `.test` itself as RFC 6761 says unless
                // told), nothing from /etc/resolv.conf or /etc/hosts.
                format!(
                    "s2s_ports = {{ {port} }}\ns2s_interfaces = {{ \"127.0.0.1\" }}\n\
                     s2s_secure_auth = false\n\
                     unbound = {{ resolvconf = false; hoststxt = false; forward = {{ {fwd} }}; \
                     options = {{ [\"do-not-query-localhost:\"] = \"no\"; [\"local-zone:\"] = \"test. transparent\" }} }}\n",
                    port = self.s2s_port,
                    fwd = lua_str(&format!("{}@{}", dns.ip(), dns.port())),
                )
            }
        };
        disabled.extend(opts.disabled_modules.iter().map(String::as_str));
        let list = |v: &[&str]| v.iter().map(|m| lua_str(m)).collect::<Vec<_>>().join("; ");
        let mut c = format!(
            r#"-- written by cpim-test-support (crates/test-support/src/xmpp.rs)
run_as_root = true -- the tests run as root in CI; mod_posix refuses otherwise
pidfile = {pidfile}
data_path = {data}
certificates = {certs}
log = {{ {{ levels = {{ min = "debug" }}, to = "file", filename = {log} }} }}

interfaces = {{ "127.0.0.1" }}
local_interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {c2s} }}
c2s_direct_tls_ports = {{ }}
legacy_ssl_ports = {{ }}
{s2s}component_ports = {{ {comp} }}
component_interfaces = {{ "127.0.0.1" }}

c2s_require_encryption = false
s2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
allow_registration = false

modules_enabled = {{ {enabled} }}
modules_disabled = {{ {disabled} }}
{extra}
VirtualHost {host}
"#,
            host = lua_str(&self.host),
            s2s = if s2s.is_empty() {
                "s2s_ports = { }\n".to_owned()
            } else {
                s2s
            },
            pidfile = path(&self.dir.join("prosody.pid")),
            data = path(&self.dir.join("data")),
            certs = path(&self.dir.join("certs")),
            log = path(&self.log),
            c2s = self.c2s_port,
            comp = self.component_port,
            enabled = list(&enabled),
            disabled = list(&disabled),
            extra = opts.extra_global,
        );
        for (domain, secret) in &opts.components {
            c.push_str(&format!(
                "\nComponent {}\n    component_secret = {}\n",
                lua_str(domain),
                lua_str(secret)
            ));
        }
        let _ = fs::create_dir_all(self.dir.join("data"));
        let _ = fs::create_dir_all(self.dir.join("certs"));
        c
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        self.kill();
        if std::env::var_os("CPIM_KEEP_TEST_DIRS").is_some() {
            eprintln!("keeping prosody dir {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// What a slixmpp client needs of the server it logs in to.
pub trait XmppServer {
    /// A directory for the client's own files.
    fn dir(&self) -> &Path;
    /// The plain-TCP client port on 127.0.0.1.
    fn c2s_port(&self) -> u16;
    /// The server's log, shown when a client fails.
    fn log_path(&self) -> &Path;
}

impl XmppServer for Prosody {
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

// ---------------------------------------------------------------------------------------
// slixmpp client
// ---------------------------------------------------------------------------------------

/// One event of the slixmpp driver: `{"kind": "message"|"presence"|"iq"|"session_start"|
/// "disconnected"|..., "xml": ..., "from": ..., ...}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event(pub Value);

impl Event {
    /// `message`, `presence`, `iq`, `session_start`, `disconnected`, `auth_failed`, ...
    pub fn kind(&self) -> &str {
        self.get("kind").unwrap_or("")
    }

    /// A string field; `None` when missing or null.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str)
    }

    /// The raw stanza (empty for non-stanza events).
    pub fn xml(&self) -> &str {
        self.get("xml").unwrap_or("")
    }

    /// A message carrying a body.
    pub fn is_chat_body(&self) -> bool {
        self.kind() == "message" && self.get("body").is_some()
    }

    /// The bare JID of `from`.
    pub fn sender_bare(&self) -> Option<&str> {
        self.get("from").map(|f| f.split('/').next().unwrap_or(f))
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Optional parts of a message sent by [`XmppClient::send_message`].
#[derive(Debug, Clone, Default)]
pub struct MessageExtras {
    pub subject: Option<String>,
    pub thread: Option<String>,
    /// `xml:lang` on the message.
    pub lang: Option<String>,
    /// The `type` attribute (`chat`, `normal`, `headline`, `groupchat`, `error`).
    pub kind: Option<String>,
    /// The stanza id; generated when `None`.
    pub id: Option<String>,
    /// XEP-0184 `<request/>`.
    pub request_receipt: bool,
    /// XEP-0333 `<markable/>`.
    pub markable: bool,
    /// XEP-0085 state element name (`active`, `composing`, `paused`, `inactive`, `gone`).
    pub chat_state: Option<String>,
}

/// Presence types for [`XmppClient::send_presence`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceKind {
    Available,
    Unavailable,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
    Probe,
}

impl PresenceKind {
    fn as_str(self) -> &'static str {
        match self {
            PresenceKind::Available => "available",
            PresenceKind::Unavailable => "unavailable",
            PresenceKind::Subscribe => "subscribe",
            PresenceKind::Subscribed => "subscribed",
            PresenceKind::Unsubscribe => "unsubscribe",
            PresenceKind::Unsubscribed => "unsubscribed",
            PresenceKind::Probe => "probe",
        }
    }
}

/// A slixmpp client (`xmpp_client.py`) logged in to a [`Prosody`], plain TCP.
///
/// Events are buffered: `expect` takes the first matching event and leaves the others,
/// in order, for later calls.
#[derive(Debug)]
pub struct XmppClient {
    jid: String,
    full_jid: String,
    roster: Value,
    child: Child,
    stdin: Option<ChildStdin>,
    events: mpsc::UnboundedReceiver<Event>,
    pending: VecDeque<Event>,
    seq: u64,
    stderr: PathBuf,
    prosody_log: PathBuf,
}

impl XmppClient {
    /// Logs in and waits for the session (roster fetched, initial presence sent). Panics
    /// on failure.
    pub async fn connect(prosody: &impl XmppServer, jid: &str, password: &str) -> XmppClient {
        match Self::try_connect(prosody, jid, password).await {
            Ok(c) => c,
            Err(e) => panic!("{jid} could not log in: {e}"),
        }
    }

    /// Like `connect`, with the failure as `Err` (`auth_failed`, `connection_failed`, ...).
    pub async fn try_connect(
        prosody: &impl XmppServer,
        jid: &str,
        password: &str,
    ) -> Result<XmppClient, String> {
        let n = DIR_COUNTER.fetch_add(1, Ordering::Relaxed);
        let stderr_path = prosody
            .dir()
            .join(format!("client-{}-{n}.stderr", sanitize(jid)));
        let stderr = fs::File::create(&stderr_path).expect("client stderr file");
        let mut child = Command::new(PYTHON)
            .args(["-I", "-u", CLIENT_SCRIPT, jid, password, "127.0.0.1"])
            .arg(prosody.c2s_port().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn /usr/bin/python3 xmpp_client.py");
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|_| json!({"kind": "garbage", "line": line}));
                if tx.send(Event(value)).is_err() {
                    break;
                }
            }
        });
        let mut client = XmppClient {
            jid: jid.to_owned(),
            full_jid: String::new(),
            roster: Value::Null,
            child,
            stdin,
            events: rx,
            pending: VecDeque::new(),
            seq: 0,
            stderr: stderr_path,
            prosody_log: prosody.log_path().to_owned(),
        };
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(ev) = client.recv(left).await else {
                return Err(format!(
                    "no session within {TIMEOUT:?}\n{}",
                    client.diagnostics()
                ));
            };
            match ev.kind() {
                "session_start" => {
                    client.full_jid = ev.get("jid").unwrap_or_default().to_owned();
                    client.roster = ev.0.get("roster").cloned().unwrap_or(Value::Null);
                    return Ok(client);
                }
                "auth_failed" | "connection_failed" => {
                    return Err(format!("{ev}\n{}", client.diagnostics()));
                }
                _ => client.pending.push_back(ev),
            }
        }
    }

    /// The bare JID given to `connect`.
    pub fn jid(&self) -> &str {
        &self.jid
    }

    /// The bound full JID.
    pub fn full_jid(&self) -> &str {
        &self.full_jid
    }

    /// The roster at login: `{bare JID: {"subscription", "ask", "name", "groups"}}`.
    pub fn roster(&self) -> &Value {
        &self.roster
    }

    /// Sends a message; returns its id.
    pub async fn send_message<'a>(
        &mut self,
        to: &str,
        body: impl Into<Option<&'a str>>,
        extras: MessageExtras,
    ) -> String {
        let cmd = json!({
            "op": "send_message",
            "to": to,
            "body": body.into(),
            "subject": extras.subject,
            "thread": extras.thread,
            "lang": extras.lang,
            "type": extras.kind,
            "id": extras.id,
            "receipt": extras.request_receipt,
            "markable": extras.markable,
            "chat_state": extras.chat_state,
        });
        self.command(cmd).await.unwrap_or_default()
    }

    /// Sends a presence (`to: None` broadcasts); returns its id if any.
    pub async fn send_presence(
        &mut self,
        kind: PresenceKind,
        to: Option<&str>,
        show: Option<&str>,
        status: Option<&str>,
    ) -> Option<String> {
        let cmd = json!({
            "op": "send_presence",
            "kind": kind.as_str(),
            "to": to,
            "show": show,
            "status": status,
        });
        self.command(cmd).await
    }

    /// Writes raw XML on the stream, as is.
    pub async fn send_raw(&mut self, xml: &str) {
        self.command(json!({"op": "send_raw", "xml": xml})).await;
    }

    /// The next event (buffered ones first); `None` after `timeout` or when the driver
    /// is gone.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<Event> {
        if let Some(ev) = self.pending.pop_front() {
            return Some(ev);
        }
        self.recv(timeout).await
    }

    /// Waits for the first event matching `pred` (buffered ones first); the others stay
    /// buffered. Panics after `timeout` with the events seen and the Prosody log.
    pub async fn expect(&mut self, pred: impl Fn(&Event) -> bool, timeout: Duration) -> Event {
        match self.try_expect(&pred, timeout).await {
            Some(ev) => ev,
            None => panic!(
                "{}: no matching event within {timeout:?}\n{}",
                self.jid,
                self.diagnostics()
            ),
        }
    }

    /// Like `expect`, `None` on timeout.
    pub async fn try_expect(
        &mut self,
        pred: impl Fn(&Event) -> bool,
        timeout: Duration,
    ) -> Option<Event> {
        if let Some(i) = self.pending.iter().position(&pred) {
            return self.pending.remove(i);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ev = self.recv(left).await?;
            if pred(&ev) {
                return Some(ev);
            }
            self.pending.push_back(ev);
        }
    }

    /// Panics if an event matching `pred` is buffered or arrives within `window`.
    pub async fn expect_none(&mut self, pred: impl Fn(&Event) -> bool, window: Duration) {
        if let Some(ev) = self.try_expect(&pred, window).await {
            panic!(
                "{}: unexpected event {ev}\n{}",
                self.jid,
                self.diagnostics()
            );
        }
    }

    /// The events buffered so far (after `expect` skipped them), emptying the buffer.
    pub fn drain(&mut self) -> Vec<Event> {
        while let Ok(ev) = self.events.try_recv() {
            self.pending.push_back(ev);
        }
        self.pending.drain(..).collect()
    }

    /// Closes the stream (`</stream:stream>`) and waits for the driver to exit (killed
    /// after 5 s).
    pub async fn close(mut self) {
        drop(self.stdin.take()); // EOF: the driver disconnects and exits
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Drop kills it.
    }

    /// Sends a command and waits for its `sent` answer, buffering other events.
    async fn command(&mut self, mut cmd: Value) -> Option<String> {
        self.seq += 1;
        let seq = self.seq;
        cmd["seq"] = json!(seq);
        let line = format!("{cmd}\n");
        let written = match self.stdin.as_mut() {
            Some(stdin) => stdin
                .write_all(line.as_bytes())
                .and_then(|()| stdin.flush()),
            None => Err(std::io::Error::other("stdin closed")),
        };
        if let Err(e) = written {
            panic!("{}: driver gone ({e})\n{}", self.jid, self.diagnostics());
        }
        let is_answer =
            |e: &Event| matches!(e.kind(), "sent" | "error") && e.0.get("seq") == Some(&json!(seq));
        let ev = self.expect(is_answer, TIMEOUT).await;
        if ev.kind() == "error" {
            panic!(
                "{}: command {cmd} failed: {ev}\n{}",
                self.jid,
                self.diagnostics()
            );
        }
        ev.get("id").map(str::to_owned)
    }

    async fn recv(&mut self, timeout: Duration) -> Option<Event> {
        tokio::time::timeout(timeout, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    fn diagnostics(&self) -> String {
        let events: Vec<String> = self.pending.iter().map(|e| format!("  {e}")).collect();
        format!(
            "--- {} events not consumed ---\n{}\n--- driver stderr ---\n{}\n--- prosody.log (tail) ---\n{}",
            self.jid,
            events.join("\n"),
            tail_of_file(&self.stderr, 20),
            tail_of_file(&self.prosody_log, LOG_TAIL_LINES)
        )
    }
}

impl Drop for XmppClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// Raw XEP-0114 component socket
// ---------------------------------------------------------------------------------------

/// A raw `jabber:component:accept` TCP connection, for tests that play the component
/// themselves.
#[derive(Debug)]
pub struct RawComponent {
    stream: tokio::net::TcpStream,
    buf: String,
    domain: String,
    stream_id: String,
    prosody_log: PathBuf,
}

impl RawComponent {
    /// Connects, sends the stream header for `domain` and reads the server's header.
    pub async fn open(prosody: &Prosody, domain: &str) -> RawComponent {
        let stream = tokio::time::timeout(
            TIMEOUT,
            tokio::net::TcpStream::connect(prosody.component_addr()),
        )
        .await
        .expect("component connect timed out")
        .expect("component connect");
        let mut c = RawComponent {
            stream,
            buf: String::new(),
            domain: domain.to_owned(),
            stream_id: String::new(),
            prosody_log: prosody.log.clone(),
        };
        c.send(&format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
             xmlns:stream='http://etherx.jabber.org/streams' to='{domain}'>"
        ))
        .await;
        let header = c.read_until(">", TIMEOUT).await;
        let header = if header.starts_with("<?xml") {
            c.read_until(">", TIMEOUT).await
        } else {
            header
        };
        assert!(
            header.contains("<stream:stream"),
            "not a stream header: {header}"
        );
        c.stream_id = attr(&header, "id")
            .unwrap_or_else(|| panic!("no id in stream header: {header}"))
            .to_owned();
        c
    }

    /// Opens and authenticates with the configured secret; panics unless `<handshake/>`.
    pub async fn connect(prosody: &Prosody, domain: &str) -> RawComponent {
        let mut c = Self::open(prosody, domain).await;
        let reply = c.handshake(prosody.component_secret(domain)).await;
        assert!(
            reply.starts_with("<handshake"),
            "handshake refused: {reply}"
        );
        c
    }

    /// The stream id the server sent.
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Sends `<handshake>hex(SHA-1(id + secret))</handshake>` and returns the reply
    /// element (`<handshake/>` on success, a stream error otherwise).
    pub async fn handshake(&mut self, secret: &str) -> String {
        let digest = handshake_digest(&self.stream_id, secret);
        self.send(&format!("<handshake>{digest}</handshake>")).await;
        let first = self.read_until(">", TIMEOUT).await;
        if first.starts_with("<handshake") && !first.ends_with("/>") {
            let rest = self.read_until("</handshake>", TIMEOUT).await;
            return first + &rest;
        }
        if first.starts_with("<stream:error") {
            let rest = self.read_until("</stream:error>", TIMEOUT).await;
            return first + &rest;
        }
        first
    }

    pub async fn send(&mut self, xml: &str) {
        self.stream
            .write_all(xml.as_bytes())
            .await
            .expect("component write");
    }

    /// Reads until `needle` shows up; returns everything up to and including it (the
    /// rest stays buffered). Panics on timeout or EOF.
    pub async fn read_until(&mut self, needle: &str, timeout: Duration) -> String {
        match self.try_read_until(needle, timeout).await {
            Ok(s) => s,
            Err(e) => panic!(
                "component {}: waiting for {needle:?}: {e}; received so far: {:?}\n--- prosody.log (tail) ---\n{}",
                self.domain,
                self.buf,
                tail_of_file(&self.prosody_log, LOG_TAIL_LINES)
            ),
        }
    }

    /// Like `read_until`, with timeout/EOF as `Err`.
    pub async fn try_read_until(
        &mut self,
        needle: &str,
        timeout: Duration,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.buf.find(needle) {
                let rest = self.buf.split_off(i + needle.len());
                return Ok(std::mem::replace(&mut self.buf, rest));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let mut chunk = [0u8; 8192];
            match tokio::time::timeout(left, self.stream.read(&mut chunk)).await {
                Err(_) => return Err(format!("timeout after {timeout:?}")),
                Ok(Err(e)) => return Err(format!("read error: {e}")),
                Ok(Ok(0)) => return Err("connection closed".to_owned()),
                Ok(Ok(n)) => self.buf.push_str(&String::from_utf8_lossy(&chunk[..n])),
            }
        }
    }
}

/// XEP-0114 handshake value: lowercase hex SHA-1 of stream id + secret (SHA-1 from
/// xmpp-parsers, already a dependency).
pub fn handshake_digest(stream_id: &str, secret: &str) -> String {
    let h = xmpp_parsers::component::Handshake::from_stream_id_and_password(
        stream_id.to_owned(),
        secret,
    );
    let bytes = h.data.expect("a request handshake carries data");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------

/// The value of attribute `name` in a start tag (either quote style).
pub fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    for q in ['\'', '"'] {
        let pat = format!(" {name}={q}");
        if let Some(i) = tag.find(&pat) {
            let rest = &tag[i + pat.len()..];
            return rest.find(q).map(|j| &rest[..j]);
        }
    }
    None
}

fn lua_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
