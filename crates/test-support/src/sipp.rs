//! Running SIPp scenarios against the SIP adapter on loopback (test support).
//!
//! The scenarios live in `crates/sip/tests/sipp/` (see the README there for
//! what each one does and which `-set` variables it needs). This module finds
//! them, picks free loopback ports, runs `sipp` as a foreground child process
//! (`-nostdin`, never a terminal, a hard `-timeout` with `-timeout_error`) and
//! collects what it wrote: the error trace (`-trace_err`), the `<log>` actions
//! (`-trace_logs`), every SIP message sent and received (`-trace_msg`), the
//! final statistics screen (`-trace_screen`) and stdout/stderr. All of it goes
//! to a fresh directory under [`std::env::temp_dir`], removed when the run
//! succeeds (kept when it fails, or always with `SIPP_KEEP_LOGS=1`).
//!
//! Standard library only.
//!
//! ```ignore
//! use std::time::Duration;
//! use cpim_test_support::sipp::{Sipp, SippOptions, Transport};
//!
//! if !Sipp::available() {
//!     eprintln!("sipp not installed, skipping");
//!     return;
//! }
//! // A SIPp UAS answering 404 to every MESSAGE; the gateway sends to it.
//! let mut uas = Sipp::start(
//!     "uas_message.xml",
//!     SippOptions::uas()
//!         .transport(Transport::Udp)
//!         .var("status", "404")
//!         .calls(1)
//!         .arg("-deadcall_wait")
//!         .arg("0"),
//! )
//! .expect("start sipp");
//! uas.wait_ready(Duration::from_secs(5)).expect("sipp listening");
//! let sipp_addr = uas.local_addr(); // point the gateway's outbound SIP here
//! // ... make the gateway send one MESSAGE ...
//! let report = uas.wait(Duration::from_secs(10)).expect("sipp run");
//! let got = report.received();
//! assert_eq!(got[0].method(), Some("MESSAGE"));
//! assert_eq!(got[0].body(), "hello");
//!
//! // A SIPp UAC sending one MESSAGE to the gateway, expecting 202.
//! let uac = Sipp::start(
//!     "uac_message.xml",
//!     SippOptions::uac(gateway_sip_addr)
//!         .service("bob")
//!         .var("to_domain", "example.com")
//!         .var("from_user", "alice")
//!         .var("from_domain", "example.org")
//!         .var("body", "hello")
//!         .var("expect", "202"),
//! )
//! .expect("start sipp");
//! uac.wait(Duration::from_secs(15)).expect("MESSAGE answered 202");
//! ```
//!
//! SIPp exit codes: 0 all calls succeeded, 1 at least one failed, 255 fatal
//! error or `-timeout` reached (with `-timeout_error`), 97 internal stop,
//! 99 nothing processed. A signal (see [`Sipp::stop`]) exits 0 whatever
//! happened, so after a stop check the logs, not only the status.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The `sipp` binary: `$SIPP_BIN` if set, else `sipp` from `PATH`.
pub fn sipp_bin() -> String {
    std::env::var("SIPP_BIN").unwrap_or_else(|_| "sipp".to_owned())
}

/// `crates/sip/tests/sipp`, where the scenario files are (found from any crate of the
/// workspace).
pub fn scenario_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("sip")
        .join("tests")
        .join("sipp")
}

/// A scenario given by file name (`uac_message.xml`) is looked up in
/// [`scenario_dir`]; anything with a `/` is taken as a path.
pub fn scenario_path(scenario: &str) -> PathBuf {
    if scenario.contains('/') {
        PathBuf::from(scenario)
    } else {
        scenario_dir().join(scenario)
    }
}

/// A loopback port that is free for both UDP and TCP right now (bound on
/// 127.0.0.1:0 and released). Another process may still take it before SIPp
/// binds it; that is rare enough on a test machine.
pub fn free_port() -> io::Result<u16> {
    Ok(free_ports(1)?.remove(0))
}

/// `n` distinct loopback ports, each free for both UDP and TCP.
pub fn free_ports(n: usize) -> io::Result<Vec<u16>> {
    let mut held = Vec::with_capacity(n);
    let mut ports = Vec::with_capacity(n);
    let mut attempts = 0;
    while ports.len() < n {
        attempts += 1;
        if attempts > 100 * (n + 1) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "no loopback port free for both UDP and TCP",
            ));
        }
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = tcp.local_addr()?.port();
        if let Ok(udp) = UdpSocket::bind((Ipv4Addr::LOCALHOST, port)) {
            ports.push(port);
            // Keep both bound until all ports are picked, so they differ.
            held.push((tcp, udp));
        }
    }
    drop(held);
    Ok(ports)
}

/// Is `port` on `ip` currently bound by someone for `transport`?
fn port_in_use(ip: IpAddr, port: u16, transport: Transport) -> bool {
    let res = match transport {
        Transport::Udp => UdpSocket::bind((ip, port)).map(drop),
        Transport::Tcp => TcpListener::bind((ip, port)).map(drop),
    };
    matches!(res, Err(e) if e.kind() == io::ErrorKind::AddrInUse)
}

/// SIP transport of a SIPp run: `-t u1` or `-t t1` (one socket for all calls).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    fn sipp_flag(self) -> &'static str {
        match self {
            Transport::Udp => "u1",
            Transport::Tcp => "t1",
        }
    }
}

/// Command line of one SIPp run. Start from [`SippOptions::uac`] (SIPp sends
/// first, to `remote`) or [`SippOptions::uas`] (SIPp waits for requests).
#[derive(Debug, Clone)]
pub struct SippOptions {
    /// Where a UAC scenario sends (`remote_host:remote_port` argument).
    pub remote: Option<SocketAddr>,
    pub transport: Transport,
    /// `-i` and `-bind_local`: the address SIPp binds and puts in Via/Contact.
    pub local_ip: IpAddr,
    /// `-p`; `None` picks a free port (see [`free_port`]).
    pub local_port: Option<u16>,
    /// `-s`: the `[service]` keyword (user part of Request-URI/To).
    pub service: Option<String>,
    /// `-set NAME VALUE`: the scenario's `[$NAME]` variables.
    pub vars: Vec<(String, String)>,
    /// `-key NAME VALUE`: the scenario's `[NAME]` keywords.
    pub keys: Vec<(String, String)>,
    /// `-m`: exit after this many calls.
    pub calls: Option<u32>,
    /// `-r`: calls per rate period.
    pub rate: Option<f64>,
    /// `-rp`: the rate period (default 1 s).
    pub rate_period: Option<Duration>,
    /// `-timeout` (always with `-timeout_error`): SIPp gives up and exits 255
    /// after this long. Without `-timeout_error` a stuck call keeps SIPp
    /// running forever, so it is always set.
    pub timeout: Duration,
    /// `-recv_timeout`: a call waiting longer than this for a message fails.
    pub recv_timeout: Option<Duration>,
    /// `-deadcall_wait`: how long an ended call's Call-ID swallows late
    /// messages (SIPp default 33 s). `Some(Duration::ZERO)` lets a request
    /// reusing an ended Call-ID open a new call (`uas_message*.xml`).
    pub deadcall_wait: Option<Duration>,
    /// `-default_behaviors` (default `all,-bye`: no BYE sent for an aborted
    /// MESSAGE/SUBSCRIBE call).
    pub default_behaviors: String,
    /// Appended verbatim after everything else.
    pub extra_args: Vec<String>,
}

impl Default for SippOptions {
    fn default() -> Self {
        SippOptions {
            remote: None,
            transport: Transport::Udp,
            local_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            local_port: None,
            service: None,
            vars: Vec::new(),
            keys: Vec::new(),
            calls: None,
            rate: None,
            rate_period: None,
            timeout: Duration::from_secs(30),
            recv_timeout: None,
            deadcall_wait: None,
            default_behaviors: "all,-bye".to_owned(),
            extra_args: Vec::new(),
        }
    }
}

impl SippOptions {
    /// SIPp as client: the scenario starts with a `<send>` to `remote`.
    /// One call by default (`-m 1`).
    pub fn uac(remote: SocketAddr) -> Self {
        SippOptions {
            remote: Some(remote),
            calls: Some(1),
            ..SippOptions::default()
        }
    }

    /// SIPp as server: the scenario starts with a `<recv>`; every new
    /// Call-ID is a new call. Runs until `calls` calls ended, the timeout,
    /// or [`Sipp::stop`].
    pub fn uas() -> Self {
        SippOptions::default()
    }

    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    pub fn local_port(mut self, port: u16) -> Self {
        self.local_port = Some(port);
        self
    }

    pub fn service(mut self, service: impl Into<String>) -> Self {
        self.service = Some(service.into());
        self
    }

    pub fn var(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.vars.push((name.into(), value.into()));
        self
    }

    pub fn key(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.keys.push((name.into(), value.into()));
        self
    }

    pub fn calls(mut self, calls: u32) -> Self {
        self.calls = Some(calls);
        self
    }

    /// No `-m`: run until the timeout or [`Sipp::stop`].
    pub fn unlimited_calls(mut self) -> Self {
        self.calls = None;
        self
    }

    pub fn rate(mut self, calls_per_period: f64) -> Self {
        self.rate = Some(calls_per_period);
        self
    }

    pub fn rate_period(mut self, period: Duration) -> Self {
        self.rate_period = Some(period);
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn recv_timeout(mut self, timeout: Duration) -> Self {
        self.recv_timeout = Some(timeout);
        self
    }

    pub fn deadcall_wait(mut self, wait: Duration) -> Self {
        self.deadcall_wait = Some(wait);
        self
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    fn to_args(&self, scenario: &Path, local_port: u16, dir: &Path) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |s: &str| a.push(s.to_owned());
        if let Some(remote) = self.remote {
            push(&remote.to_string());
        }
        push("-sf");
        push(&scenario.to_string_lossy());
        push("-t");
        push(self.transport.sipp_flag());
        push("-i");
        push(&self.local_ip.to_string());
        push("-bind_local");
        push("-p");
        push(&local_port.to_string());
        push("-nostdin");
        push("-timeout");
        push(&ms(self.timeout));
        push("-timeout_error");
        push("-default_behaviors");
        push(&self.default_behaviors);
        push("-trace_err");
        push("-error_file");
        push(&dir.join(ERRORS_FILE).to_string_lossy());
        push("-trace_msg");
        push("-message_file");
        push(&dir.join(MESSAGES_FILE).to_string_lossy());
        push("-trace_logs");
        push("-log_file");
        push(&dir.join(LOG_FILE).to_string_lossy());
        push("-trace_screen");
        push("-screen_file");
        push(&dir.join(SCREEN_FILE).to_string_lossy());
        if let Some(service) = &self.service {
            push("-s");
            push(service);
        }
        for (name, value) in &self.vars {
            push("-set");
            push(name);
            push(value);
        }
        for (name, value) in &self.keys {
            push("-key");
            push(name);
            push(value);
        }
        if let Some(calls) = self.calls {
            push("-m");
            push(&calls.to_string());
        }
        if let Some(rate) = self.rate {
            push("-r");
            push(&rate.to_string());
        }
        if let Some(period) = self.rate_period {
            push("-rp");
            push(&ms(period));
        }
        if let Some(t) = self.recv_timeout {
            push("-recv_timeout");
            push(&ms(t));
        }
        if let Some(t) = self.deadcall_wait {
            push("-deadcall_wait");
            push(&ms(t));
        }
        for extra in &self.extra_args {
            push(extra);
        }
        a
    }
}

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

const ERRORS_FILE: &str = "errors.log";
const MESSAGES_FILE: &str = "messages.log";
const LOG_FILE: &str = "logs.log";
const SCREEN_FILE: &str = "screen.log";
const STDOUT_FILE: &str = "stdout.txt";
const STDERR_FILE: &str = "stderr.txt";

static RUN_COUNTER: AtomicU64 = AtomicU64::new(0);

fn run_dir(scenario: &Path) -> io::Result<PathBuf> {
    let stem = scenario
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "scenario".to_owned());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = RUN_COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("sipp-{stem}-{}-{n}-{nanos:09}", std::process::id()));
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn keep_logs() -> bool {
    std::env::var_os("SIPP_KEEP_LOGS").is_some_and(|v| !v.is_empty() && v != "0")
}

/// The last `max` bytes of `s` (on a char boundary).
fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// One running `sipp` process. Dropping it kills and reaps the process
/// (its directory is then kept, for post-mortems).
#[derive(Debug)]
pub struct Sipp {
    child: Option<Child>,
    dir: PathBuf,
    scenario: PathBuf,
    local: SocketAddr,
    transport: Transport,
    command_line: String,
}

impl Sipp {
    /// Is a runnable `sipp` there? Tests skip themselves when not.
    pub fn available() -> bool {
        Command::new(sipp_bin())
            .arg("-v")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    }

    /// Spawns `sipp` for `scenario` (a file name in [`scenario_dir`] or a
    /// path). Returns as soon as the process runs; use
    /// [`Sipp::wait_ready`] before sending to a UAS scenario.
    pub fn start(scenario: &str, opts: SippOptions) -> io::Result<Sipp> {
        let scenario = scenario_path(scenario);
        if !scenario.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no SIPp scenario {}", scenario.display()),
            ));
        }
        let local_port = match opts.local_port {
            Some(p) => p,
            None => free_port()?,
        };
        let dir = run_dir(&scenario)?;
        let args = opts.to_args(&scenario, local_port, &dir);
        let bin = sipp_bin();
        let mut command_line = bin.clone();
        for a in &args {
            command_line.push(' ');
            if a.is_empty() || a.contains(char::is_whitespace) || a.contains('"') {
                let _ = write!(command_line, "'{}'", a.replace('\'', "'\\''"));
            } else {
                command_line.push_str(a);
            }
        }
        let _ = fs::write(dir.join("command.txt"), format!("{command_line}\n"));
        let stdout = File::create(dir.join(STDOUT_FILE))?;
        let stderr = File::create(dir.join(STDERR_FILE))?;
        let child = Command::new(&bin)
            .args(&args)
            // Anything SIPp writes without an explicit file name lands here.
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("spawning {bin}: {e}")))?;
        Ok(Sipp {
            child: Some(child),
            dir,
            scenario,
            local: SocketAddr::new(opts.local_ip, local_port),
            transport: opts.transport,
            command_line,
        })
    }

    /// The address SIPp binds (`-i` + `-p`): where a UAS scenario listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The per-run directory holding the traces.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The command line, shell-quoted, for error messages and reruns.
    pub fn command_line(&self) -> &str {
        &self.command_line
    }

    /// Waits until SIPp has bound its port (so a UAS can receive). Fails if
    /// SIPp exits first or nothing is bound within `timeout`.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut() {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        return Err(self.diagnostics(&format!(
                            "sipp exited ({status}) before binding {}",
                            self.local
                        )));
                    }
                    Ok(None) => {}
                    Err(e) => return Err(format!("waiting for sipp: {e}")),
                }
            }
            if port_in_use(self.local.ip(), self.local.port(), self.transport) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.diagnostics(&format!(
                    "sipp did not bind {} ({:?}) within {timeout:?}",
                    self.local, self.transport
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asks SIPp to finish (SIGUSR1, like pressing `q`): no new calls, the
    /// ongoing ones run to their end, then it exits. Follow with
    /// [`Sipp::wait`]. Uses the `kill` command (std only, no libc).
    pub fn stop(&self) -> io::Result<()> {
        let Some(pid) = self.pid() else {
            return Ok(());
        };
        let status = Command::new("kill")
            .arg("-USR1")
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!("kill -USR1 {pid}: {status}")))
        }
    }

    /// The SIP messages traced so far (the run may still be going; the file
    /// is written as messages pass).
    pub fn messages_so_far(&self) -> Vec<SippMessage> {
        parse_message_log(&read_lossy(&self.dir.join(MESSAGES_FILE)))
    }

    /// The `<log>` lines written so far.
    pub fn log_so_far(&self) -> String {
        read_lossy(&self.dir.join(LOG_FILE))
    }

    /// Polls the `<log>` file until `needle` occurs `count` times; returns
    /// the log text. For UAS scenarios that run until stopped.
    pub fn wait_for_log(
        &mut self,
        needle: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log_so_far();
            if log.matches(needle).count() >= count {
                return Ok(log);
            }
            let exited = match self.child.as_mut().map(Child::try_wait) {
                Some(Ok(Some(status))) => Some(status.to_string()),
                Some(Ok(None)) => None,
                Some(Err(e)) => Some(e.to_string()),
                None => Some("reaped".to_owned()),
            };
            if let Some(how) = exited {
                // One last read: SIPp may have written just before exiting.
                let log = self.log_so_far();
                if log.matches(needle).count() >= count {
                    return Ok(log);
                }
                return Err(self.diagnostics(&format!(
                    "sipp exited ({how}) with {:?} {} of {count} times in its log",
                    needle,
                    log.matches(needle).count()
                )));
            }
            if Instant::now() >= deadline {
                return Err(self.diagnostics(&format!(
                    "{:?} not {count} times in the sipp log within {timeout:?}",
                    needle
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for SIPp to exit (killing it after `timeout`). Ok only for
    /// exit status 0; the directory is then removed (unless
    /// `SIPP_KEEP_LOGS` is set). Err carries the exit status, the command
    /// line, the error trace, the `<log>` lines, the end of the message
    /// trace and of stdout/stderr, and the kept directory.
    pub fn wait(self, timeout: Duration) -> Result<SippReport, String> {
        let (report, this) = self.wait_any(timeout)?;
        if report.status.success() {
            if !keep_logs() {
                let _ = fs::remove_dir_all(&this.dir);
            }
            Ok(report)
        } else {
            Err(this.diagnostics(&format!("sipp failed: {}", report.status)))
        }
    }

    /// Waits for SIPp to exit and returns its report whatever its exit status: for load
    /// runs in which some calls fail by design (a gateway killed under load). The run's
    /// files are kept in [`Sipp::dir`].
    pub fn wait_any(mut self, timeout: Duration) -> Result<(SippReport, Sipp), String> {
        let Some(mut child) = self.child.take() else {
            return Err(self.diagnostics("sipp was already reaped"));
        };
        let deadline = Instant::now() + timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {}
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(self.diagnostics(&format!("waiting for sipp: {e}")));
                }
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(
                    self.diagnostics(&format!("sipp still running after {timeout:?}: killed"))
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        let report = self.report(status);
        Ok((report, self))
    }

    fn report(&self, status: ExitStatus) -> SippReport {
        SippReport {
            status,
            messages_log: read_lossy(&self.dir.join(MESSAGES_FILE)),
            log: read_lossy(&self.dir.join(LOG_FILE)),
            errors: read_lossy(&self.dir.join(ERRORS_FILE)),
            screen: read_lossy(&self.dir.join(SCREEN_FILE)),
            stdout: read_lossy(&self.dir.join(STDOUT_FILE)),
            stderr: read_lossy(&self.dir.join(STDERR_FILE)),
            dir: self.dir.clone(),
        }
    }

    fn diagnostics(&self, what: &str) -> String {
        let errors = read_lossy(&self.dir.join(ERRORS_FILE));
        let log = read_lossy(&self.dir.join(LOG_FILE));
        let messages = read_lossy(&self.dir.join(MESSAGES_FILE));
        let screen = read_lossy(&self.dir.join(SCREEN_FILE));
        let stdout = read_lossy(&self.dir.join(STDOUT_FILE));
        let stderr = read_lossy(&self.dir.join(STDERR_FILE));
        let mut s = String::new();
        let _ = writeln!(s, "{what}");
        let _ = writeln!(s, "scenario: {}", self.scenario.display());
        let _ = writeln!(s, "command: {}", self.command_line);
        let _ = writeln!(s, "files kept in: {}", self.dir.display());
        let _ = writeln!(s, "--- error trace ---\n{}", tail(&errors, 8000));
        let _ = writeln!(s, "--- <log> actions ---\n{}", tail(&log, 4000));
        let _ = writeln!(s, "--- message trace (end) ---\n{}", tail(&messages, 8000));
        let _ = writeln!(s, "--- stderr ---\n{}", tail(&stderr, 2000));
        let last = if screen.is_empty() { &stdout } else { &screen };
        let _ = writeln!(s, "--- screen (end) ---\n{}", tail(last, 3000));
        s
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// What a finished, successful SIPp run left behind (read before its
/// directory was removed).
#[derive(Debug, Clone)]
pub struct SippReport {
    pub status: ExitStatus,
    /// The `-trace_msg` file: every message sent and received.
    pub messages_log: String,
    /// The `-trace_logs` file: the scenario's `<log>` lines.
    pub log: String,
    /// The `-trace_err` file (unexpected messages, failed checks).
    pub errors: String,
    /// The `-trace_screen` file: the final statistics screens.
    pub screen: String,
    pub stdout: String,
    pub stderr: String,
    /// Where the files were (removed unless `SIPP_KEEP_LOGS`).
    pub dir: PathBuf,
}

impl SippReport {
    /// All traced messages, in order.
    pub fn messages(&self) -> Vec<SippMessage> {
        parse_message_log(&self.messages_log)
    }

    /// The messages SIPp received, in order.
    pub fn received(&self) -> Vec<SippMessage> {
        self.messages()
            .into_iter()
            .filter(|m| m.direction == Direction::Received)
            .collect()
    }

    /// The messages SIPp sent (retransmissions included), in order.
    pub fn sent(&self) -> Vec<SippMessage> {
        self.messages()
            .into_iter()
            .filter(|m| m.direction == Direction::Sent)
            .collect()
    }

    /// The received requests with this method, in order.
    pub fn received_requests(&self, method: &str) -> Vec<SippMessage> {
        self.received()
            .into_iter()
            .filter(|m| m.method() == Some(method))
            .collect()
    }

    /// The `<log>` lines.
    pub fn log_lines(&self) -> Vec<&str> {
        self.log.lines().collect()
    }
}

/// Reads and parses a `-trace_msg` file (e.g. one kept with
/// `SIPP_KEEP_LOGS`).
pub fn read_message_log(path: &Path) -> io::Result<Vec<SippMessage>> {
    let bytes = fs::read(path)?;
    Ok(parse_message_log(&String::from_utf8_lossy(&bytes)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Sent,
    Received,
    /// Other trace entries ("Unexpected UDP message received:", dead
    /// calls...), which repeat a message already traced as received.
    Other,
}

/// One entry of the `-trace_msg` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SippMessage {
    pub direction: Direction,
    /// "UDP" or "TCP" for sent/received entries.
    pub transport: String,
    /// The entry's timestamp as SIPp printed it (may be empty).
    pub timestamp: String,
    /// SIPp's description line, e.g. `UDP message received [272] bytes :`.
    pub description: String,
    /// The SIP message exactly as sent/received (CRLF line ends).
    pub text: String,
}

impl SippMessage {
    /// `MESSAGE sip:bob@example.com SIP/2.0` or `SIP/2.0 202 Accepted`.
    pub fn start_line(&self) -> &str {
        self.text
            .split("\r\n")
            .next()
            .unwrap_or_default()
            .trim_end_matches('\n')
    }

    /// The request method, `None` for a response.
    pub fn method(&self) -> Option<&str> {
        let line = self.start_line();
        if line.starts_with("SIP/") {
            None
        } else {
            line.split(' ').next().filter(|m| !m.is_empty())
        }
    }

    /// The status code, `None` for a request.
    pub fn status_code(&self) -> Option<u16> {
        let line = self.start_line();
        line.strip_prefix("SIP/2.0 ")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|code| code.parse().ok())
    }

    fn head(&self) -> &str {
        match self.text.find("\r\n\r\n") {
            Some(i) => &self.text[..i],
            None => &self.text,
        }
    }

    /// The values of every header called `name` (case-insensitive; the
    /// compact forms are not mapped), folded lines joined.
    pub fn headers(&self, name: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut current: Option<String> = None;
        for line in self.head().split("\r\n").skip(1) {
            if line.starts_with(' ') || line.starts_with('\t') {
                if let Some(v) = current.as_mut() {
                    v.push(' ');
                    v.push_str(line.trim());
                }
                continue;
            }
            if let Some(v) = current.take() {
                out.push(v);
            }
            if let Some((n, v)) = line.split_once(':') {
                if n.trim().eq_ignore_ascii_case(name) {
                    current = Some(v.trim().to_owned());
                }
            }
        }
        if let Some(v) = current.take() {
            out.push(v);
        }
        out
    }

    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers(name).into_iter().next()
    }

    pub fn call_id(&self) -> Option<String> {
        self.header("Call-ID").or_else(|| self.header("i"))
    }

    /// The body (after the blank line), as sent: SIPp adds no CRLF after
    /// a body that ends the `<send>` CDATA (`[$body]]]>`).
    pub fn body(&self) -> &str {
        match self.text.find("\r\n\r\n") {
            Some(i) => &self.text[i + 4..],
            None => "",
        }
    }
}

const TRACE_SEPARATOR: &str = "-----------------------------------------------";

/// Parses the text of a `-trace_msg` file. Entries look like
///
/// ```text
/// ----------------------------------------------- 2026-01-01 10:00:00.000000
/// UDP message received [272] bytes :
///
/// MESSAGE sip:bob@example.com SIP/2.0
/// ...
/// ```
///
/// (`UDP message sent (208 bytes):` for sent ones). The byte count delimits
/// the message, so a body containing a dashed line does not confuse it.
pub fn parse_message_log(log: &str) -> Vec<SippMessage> {
    let mut out = Vec::new();
    // Byte offsets of every separator that starts a line.
    let mut starts: Vec<usize> = Vec::new();
    let mut search = 0;
    while let Some(i) = log[search..].find(TRACE_SEPARATOR) {
        let at = search + i;
        if at == 0 || log.as_bytes()[at - 1] == b'\n' {
            starts.push(at);
        }
        search = at + TRACE_SEPARATOR.len();
    }
    let mut consumed_to = 0;
    for (k, &start) in starts.iter().enumerate() {
        if start < consumed_to {
            // A separator inside a message we already sliced by its length.
            continue;
        }
        let next_start = starts
            .iter()
            .skip(k + 1)
            .copied()
            .find(|&s| s > start)
            .unwrap_or(log.len());
        let entry = &log[start..];
        let Some(sep_end) = entry.find('\n') else {
            break;
        };
        let timestamp = entry[TRACE_SEPARATOR.len()..sep_end].trim().to_owned();
        let rest = &entry[sep_end + 1..];
        let Some(desc_end) = rest.find('\n') else {
            break;
        };
        let description = rest[..desc_end].trim().to_owned();
        // A blank line follows the description.
        let mut text_start = start + sep_end + 1 + desc_end + 1;
        if log[text_start..].starts_with('\n') {
            text_start += 1;
        }
        let (direction, transport, len) = describe(&description);
        let text_end = match len {
            Some(n) if text_start + n <= log.len() && log.is_char_boundary(text_start + n) => {
                text_start + n
            }
            _ => {
                // No (usable) length: up to the next separator, minus the
                // newline SIPp adds after each message.
                let end = next_start.max(text_start);
                let mut e = end;
                if e > text_start && log.as_bytes()[e - 1] == b'\n' {
                    e -= 1;
                }
                e
            }
        };
        consumed_to = text_end;
        out.push(SippMessage {
            direction,
            transport,
            timestamp,
            description,
            text: log[text_start..text_end].to_owned(),
        });
    }
    out
}

/// "UDP message received [272] bytes :" / "TCP message sent (208 bytes):".
fn describe(description: &str) -> (Direction, String, Option<usize>) {
    let transport = description.split(' ').next().unwrap_or_default().to_owned();
    let number_between = |open: char, close: char| -> Option<usize> {
        let a = description.find(open)?;
        let b = description[a + 1..].find(close)? + a + 1;
        description[a + 1..b]
            .trim()
            .trim_end_matches(" bytes")
            .trim()
            .parse()
            .ok()
    };
    if description.contains(" message received [") {
        (Direction::Received, transport, number_between('[', ']'))
    } else if description.contains(" message sent (") {
        (Direction::Sent, transport, number_between('(', ')'))
    } else {
        (Direction::Other, String::new(), None)
    }
}
