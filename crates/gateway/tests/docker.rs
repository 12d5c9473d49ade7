//! `docker/`: the compose setup (gateway, Prosody, Kamailio) cannot be run here (no container
//! engine on the CI machines), so everything it is made of is checked with the tools
//! `scripts/setup.sh` installs:
//!
//! - `docker/compose.yaml` is read with PyYAML (`python3-yaml`): the three services, their
//!   build contexts and Dockerfiles, every bind-mounted host file, one shared network, the
//!   published ports, and the environment each container gets;
//! - the gateway configuration it mounts loads with [`Config::load_with_env`] in the
//!   container's environment (validation does not bind sockets, so the `0.0.0.0` listeners
//!   do not depend on this machine), and names the other services as they are called on the
//!   compose network;
//! - the Prosody configuration passes `prosodyctl check config` and, read by Prosody's own
//!   configuration parser, declares the gateway's user domain and component domains with the
//!   secret the gateway uses, on a component port the gateway connects to;
//! - the Kamailio configuration passes `kamailio -c` (Kamailio 5.6, the Debian package), calls
//!   only routes it defines, forwards the gateway's domains to the gateway's address and
//!   serves the gateway's SIP domain;
//! - `docker/Dockerfile` copies every workspace member and every file the sources include at
//!   compile time, builds with `--locked`, runs as a non-root user and exposes the ports.
//!
//! The checks collect problems instead of stopping at the first one; the `*_is_caught`
//! tests break a copy of `docker/` on purpose and expect the checks to say so.

#![allow(clippy::disallowed_methods)] // tests wait with deadlines and measure

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use cpim_gateway::config::{AdapterConfig, Config};
use serde_json::Value;

const PYTHON: &str = "/usr/bin/python3";
const KAMAILIO: &str = "/usr/sbin/kamailio";
const PROSODYCTL: &str = "/usr/bin/prosodyctl";
const LUA: &str = "/usr/bin/lua5.4";
/// Where Debian's prosody package keeps its Lua modules (the configuration parser).
const PROSODY_LIB: &str = "/usr/lib/prosody";

/// Where each service's configuration is mounted in its container.
const GATEWAY_SERVICE: &str = "gateway";
const PROSODY_SERVICE: &str = "prosody";
const PROSODY_CONFIG: &str = "/etc/prosody/prosody.cfg.lua";
const KAMAILIO_SERVICE: &str = "kamailio";
const KAMAILIO_CONFIG: &str = "/etc/kamailio/kamailio.cfg";

/// The secret a user might set on the host, to check that it reaches both sides.
const HOST_SECRET: &str = "secret-set-on-the-host-0123456789";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root exists")
}

// -------------------------------------------------------------------------------------------
// Problems

/// The problems found so far.
#[derive(Debug, Default)]
struct Problems(Vec<String>);

impl Problems {
    fn add(&mut self, problem: impl Into<String>) {
        self.0.push(problem.into());
    }

    fn check(&mut self, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            self.add(problem());
        }
    }

    fn assert_none(&self, what: &str) {
        assert!(
            self.0.is_empty(),
            "{what}: {} problem(s):\n- {}",
            self.0.len(),
            self.0.join("\n- ")
        );
    }

    /// For the tests that break something on purpose.
    fn assert_mentions(&self, needles: &[&str]) {
        let all = self.0.join("\n");
        for needle in needles {
            assert!(
                all.contains(needle),
                "expected a problem mentioning {needle:?}, got:\n{all}"
            );
        }
    }
}

// -------------------------------------------------------------------------------------------
// Tools

fn run(command: &mut Command) -> Result<Output, String> {
    let program = command.get_program().to_string_lossy().into_owned();
    command.output().map_err(|error| {
        format!("{program} cannot be run ({error}); run scripts/setup.sh (scripts/packages.txt)")
    })
}

fn output_text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A fresh directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "cpim-docker-test-{}-{what}-{n}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Reads a YAML file with PyYAML (refusing duplicate keys, as compose does) into JSON.
fn read_yaml(path: &Path) -> Result<Value, String> {
    const SCRIPT: &str = r#"
import json, sys, yaml

class Loader(yaml.SafeLoader):
    pass

def mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, "duplicate key %r" % (key,), key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)

Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
with open(sys.argv[1], encoding="utf-8") as f:
    json.dump(yaml.load(f, Loader=Loader), sys.stdout)
"#;
    let output = run(Command::new(PYTHON).arg("-c").arg(SCRIPT).arg(path))?;
    if !output.status.success() {
        return Err(format!(
            "{} cannot be read as YAML (PyYAML, Debian package python3-yaml):\n{}",
            path.display(),
            output_text(&output)
        ));
    }
    serde_json::from_slice(&output.stdout)
        .map_err(|error| format!("PyYAML's JSON for {}: {error}", path.display()))
}

// -------------------------------------------------------------------------------------------
// Compose variable interpolation

/// Compose's `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?message}`, `$VAR` and
/// `$$`, with `host` as the environment compose runs in.
fn interpolate(text: &str, host: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some(after) = rest.strip_prefix('{') {
            let end = after
                .find('}')
                .ok_or_else(|| format!("unterminated ${{ in {text:?}"))?;
            let expression = &after[..end];
            rest = &after[end + 1..];
            let name_end = expression
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(expression.len());
            let (name, modifier) = expression.split_at(name_end);
            if name.is_empty() {
                return Err(format!("bad variable {expression:?} in {text:?}"));
            }
            let value = host(name);
            let value = if let Some(default) = modifier.strip_prefix(":-") {
                value
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| default.to_owned())
            } else if let Some(default) = modifier.strip_prefix('-') {
                value.unwrap_or_else(|| default.to_owned())
            } else if let Some(message) = modifier.strip_prefix(":?") {
                value
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| format!("{name} must be set: {message}"))?
            } else if modifier.is_empty() {
                value.unwrap_or_default()
            } else {
                return Err(format!("unsupported ${{{expression}}} in {text:?}"));
            };
            out.push_str(&value);
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            if end == 0 {
                return Err(format!("a lone $ in {text:?} (write $$)"));
            }
            out.push_str(&host(&rest[..end]).unwrap_or_default());
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The environment `docker compose` runs in.
type HostEnv<'a> = &'a dyn Fn(&str) -> Option<String>;

fn no_host_env(_: &str) -> Option<String> {
    None
}

fn host_sets_secret(name: &str) -> Option<String> {
    (name == "CPIM_XMPP_SECRET").then(|| HOST_SECRET.to_owned())
}

// -------------------------------------------------------------------------------------------
// The compose file

#[derive(Debug, Clone)]
struct Mount {
    /// Host path (resolved against the compose file's directory).
    source: PathBuf,
    target: String,
    read_only: bool,
}

#[derive(Debug, Clone, Default)]
struct Service {
    name: String,
    /// Build context and Dockerfile, resolved.
    build: Option<(PathBuf, PathBuf)>,
    command: Vec<String>,
    /// The raw (not interpolated) environment.
    environment: BTreeMap<String, String>,
    binds: Vec<Mount>,
    /// `(container port, protocol)` of every published port.
    published: Vec<(u16, String)>,
    networks: Vec<String>,
}

impl Service {
    fn bind_at(&self, target: &str) -> Option<&Mount> {
        self.binds.iter().find(|mount| mount.target == target)
    }

    /// The container's environment, as compose would set it with `host` as its environment.
    fn env(
        &self,
        host: &dyn Fn(&str) -> Option<String>,
    ) -> Result<BTreeMap<String, String>, String> {
        self.environment
            .iter()
            .map(|(key, value)| Ok((key.clone(), interpolate(value, host)?)))
            .collect()
    }

    fn publishes(&self, port: u16, protocol: &str) -> bool {
        self.published
            .iter()
            .any(|(p, proto)| *p == port && proto == protocol)
    }
}

#[derive(Debug, Default)]
struct Compose {
    dir: PathBuf,
    services: BTreeMap<String, Service>,
}

fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items
            .iter()
            .filter_map(|item| item.as_str().map(str::to_owned))
            .collect(),
        Value::String(text) => text.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// `a/./b/../c` → `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn read_compose(path: &Path, problems: &mut Problems) -> Option<Compose> {
    let document = match read_yaml(path) {
        Ok(document) => document,
        Err(error) => {
            problems.add(error);
            return None;
        }
    };
    let Some(top) = document.as_object() else {
        problems.add(format!("{}: not a mapping", path.display()));
        return None;
    };
    let dir = normalize(path.parent().unwrap_or(Path::new(".")));
    const TOP_LEVEL: &[&str] = &[
        "version", "name", "services", "networks", "volumes", "configs", "secrets", "include",
    ];
    for key in top.keys() {
        problems.check(
            TOP_LEVEL.contains(&key.as_str()) || key.starts_with("x-"),
            || format!("compose: unknown top-level key `{key}`"),
        );
    }
    let declared = |section: &str| -> BTreeSet<String> {
        top.get(section)
            .and_then(Value::as_object)
            .map(|map| map.keys().cloned().collect())
            .unwrap_or_default()
    };
    let networks = declared("networks");
    let volumes = declared("volumes");

    let mut compose = Compose {
        dir: dir.clone(),
        services: BTreeMap::new(),
    };
    let Some(services) = top.get("services").and_then(Value::as_object) else {
        problems.add("compose: no `services`");
        return Some(compose);
    };
    for (name, definition) in services {
        let mut service = Service {
            name: name.clone(),
            ..Service::default()
        };
        let field = |key: &str| definition.get(key);

        match field("build") {
            Some(Value::String(context)) => {
                let context = normalize(&dir.join(context));
                service.build = Some((context.clone(), context.join("Dockerfile")));
            }
            Some(Value::Object(build)) => {
                let context = build.get("context").and_then(Value::as_str).unwrap_or(".");
                let context = normalize(&dir.join(context));
                let dockerfile = build
                    .get("dockerfile")
                    .and_then(Value::as_str)
                    .unwrap_or("Dockerfile");
                service.build = Some((context.clone(), normalize(&context.join(dockerfile))));
            }
            Some(other) => problems.add(format!("compose: {name}.build: unexpected {other}")),
            None => problems.check(field("image").is_some(), || {
                format!("compose: service {name} has neither `build` nor `image`")
            }),
        }
        if let Some((context, dockerfile)) = &service.build {
            problems.check(context.is_dir(), || {
                format!(
                    "compose: {name}: build context {} does not exist",
                    context.display()
                )
            });
            problems.check(dockerfile.is_file(), || {
                format!(
                    "compose: {name}: Dockerfile {} does not exist",
                    dockerfile.display()
                )
            });
        }

        service.command = field("command").map(strings).unwrap_or_default();

        match field("environment") {
            Some(Value::Object(map)) => {
                for (key, value) in map {
                    let value = match value {
                        Value::String(text) => text.clone(),
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    service.environment.insert(key.clone(), value);
                }
            }
            Some(Value::Array(items)) => {
                for item in items.iter().filter_map(Value::as_str) {
                    let (key, value) = item.split_once('=').unwrap_or((item, ""));
                    service.environment.insert(key.to_owned(), value.to_owned());
                }
            }
            Some(other) => {
                problems.add(format!("compose: {name}.environment: unexpected {other}"));
            }
            None => {}
        }

        for volume in field("volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let (kind, source, target, read_only) = match volume {
                Value::String(short) => {
                    let parts: Vec<&str> = short.split(':').collect();
                    let (source, target, mode) = match parts.as_slice() {
                        [source, target] => (*source, *target, ""),
                        [source, target, mode] => (*source, *target, *mode),
                        _ => {
                            problems.add(format!("compose: {name}: volume {short:?} unreadable"));
                            continue;
                        }
                    };
                    let bind = source.starts_with('.') || source.starts_with('/');
                    let read_only = mode.split(',').any(|m| m == "ro");
                    (
                        if bind { "bind" } else { "volume" },
                        source.to_owned(),
                        target.to_owned(),
                        read_only,
                    )
                }
                Value::Object(long) => {
                    let text = |key: &str| {
                        long.get(key)
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned()
                    };
                    let read_only = long
                        .get("read_only")
                        .and_then(Value::as_bool)
                        .unwrap_or(false);
                    let kind = match text("type").as_str() {
                        "bind" => "bind",
                        "volume" => "volume",
                        other => {
                            problems.add(format!(
                                "compose: {name}: volume type {other:?} is not checked here"
                            ));
                            continue;
                        }
                    };
                    (kind, text("source"), text("target"), read_only)
                }
                other => {
                    problems.add(format!("compose: {name}: volume {other} unreadable"));
                    continue;
                }
            };
            if kind == "bind" {
                let host = normalize(&dir.join(&source));
                problems.check(host.exists(), || {
                    format!(
                        "compose: {name}: bind-mounted {source} ({}) does not exist",
                        host.display()
                    )
                });
                service.binds.push(Mount {
                    source: host,
                    target,
                    read_only,
                });
            } else {
                problems.check(volumes.contains(&source), || {
                    format!("compose: {name}: volume {source} is not declared under `volumes`")
                });
            }
        }

        for port in field("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            // Unquoted `a:b` is a base-60 number in YAML 1.1: ports are written as strings.
            let Some(port) = port.as_str() else {
                problems.add(format!(
                    "compose: {name}: port {port} must be a quoted string"
                ));
                continue;
            };
            let (mapping, protocol) = port.split_once('/').unwrap_or((port, "tcp"));
            let container = mapping.rsplit(':').next().unwrap_or("");
            match container.parse::<u16>() {
                Ok(number) => service.published.push((number, protocol.to_owned())),
                Err(_) => problems.add(format!("compose: {name}: port {port:?} unreadable")),
            }
        }

        service.networks = match field("networks") {
            Some(Value::Array(items)) => strings(&Value::Array(items.clone())),
            Some(Value::Object(map)) => map.keys().cloned().collect(),
            _ => vec!["default".to_owned()],
        };
        for network in &service.networks {
            problems.check(network == "default" || networks.contains(network), || {
                format!("compose: {name}: network {network} is not declared under `networks`")
            });
        }

        let depends: Vec<String> = match field("depends_on") {
            Some(Value::Object(map)) => map.keys().cloned().collect(),
            Some(other) => strings(other),
            None => Vec::new(),
        };
        for other in depends {
            problems.check(services.contains_key(&other), || {
                format!("compose: {name} depends on {other}, which is not a service")
            });
        }

        compose.services.insert(name.clone(), service);
    }
    Some(compose)
}

/// The generic compose checks, then each service's configuration; returns what was found.
fn check_compose(compose_path: &Path) -> Problems {
    let mut problems = Problems::default();
    let Some(compose) = read_compose(compose_path, &mut problems) else {
        return problems;
    };
    for name in [GATEWAY_SERVICE, PROSODY_SERVICE, KAMAILIO_SERVICE] {
        problems.check(compose.services.contains_key(name), || {
            format!("compose: no service `{name}`")
        });
    }
    // One network that every service joins.
    let mut all = compose.services.values();
    if let Some(first) = all.next() {
        let mut shared: BTreeSet<&String> = first.networks.iter().collect();
        for service in all {
            shared.retain(|network| service.networks.contains(*network));
        }
        problems.check(!shared.is_empty(), || {
            "compose: the services share no network".to_owned()
        });
    }
    // Mounted configuration is read-only.
    for service in compose.services.values() {
        for mount in &service.binds {
            problems.check(!mount.source.is_file() || mount.read_only, || {
                format!(
                    "compose: {}: {} is mounted writable; mount configuration read_only",
                    service.name, mount.target
                )
            });
        }
    }
    let (Some(gateway), Some(prosody), Some(kamailio)) = (
        compose.services.get(GATEWAY_SERVICE),
        compose.services.get(PROSODY_SERVICE),
        compose.services.get(KAMAILIO_SERVICE),
    ) else {
        return problems;
    };

    // The same checks with the defaults and with a secret set on the host.
    let cases: [(&str, HostEnv); 2] = [
        ("defaults", &no_host_env),
        ("CPIM_XMPP_SECRET set on the host", &host_sets_secret),
    ];
    for (label, host) in cases {
        let Some(config) = check_gateway(&compose, gateway, host, label, &mut problems) else {
            continue;
        };
        if label == "defaults" {
            check_kamailio(kamailio, gateway, &config, &mut problems);
        }
        check_prosody(prosody, &config, host, label, &mut problems);
    }
    problems
}

// -------------------------------------------------------------------------------------------
// The gateway

/// Loads the configuration the gateway service mounts, in the container's environment, and
/// checks it against the compose file.
fn check_gateway(
    compose: &Compose,
    gateway: &Service,
    host: &dyn Fn(&str) -> Option<String>,
    label: &str,
    problems: &mut Problems,
) -> Option<Config> {
    let config_at = gateway
        .command
        .iter()
        .position(|arg| arg == "--config")
        .and_then(|i| gateway.command.get(i + 1));
    let Some(config_at) = config_at else {
        problems.add("compose: gateway: `command` does not name the configuration (--config)");
        return None;
    };
    let Some(mount) = gateway.bind_at(config_at) else {
        problems.add(format!(
            "compose: gateway: nothing is mounted at {config_at}, the --config path"
        ));
        return None;
    };
    if !mount.source.is_file() {
        return None; // reported with the mounts
    }
    let env = match gateway.env(host) {
        Ok(env) => env,
        Err(error) => {
            problems.add(format!("compose: gateway.environment ({label}): {error}"));
            return None;
        }
    };
    let config = match Config::load_with_env(&mount.source, move |name| env.get(name).cloned()) {
        Ok(config) => config,
        Err(error) => {
            problems.add(format!(
                "{} ({label}) is not a valid gateway configuration:\n{error}",
                mount.source.display()
            ));
            return None;
        }
    };
    if label != "defaults" {
        return Some(config);
    }

    // Every variable the file refers to is passed into the container (a variable with a
    // default would otherwise silently keep its default).
    let text = fs::read_to_string(&mount.source).unwrap_or_default();
    for (at, _) in text.match_indices("${") {
        let name: String = text[at + 2..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        problems.check(gateway.environment.contains_key(&name), || {
            format!("compose: gateway.environment does not pass {name}, which the gateway configuration uses")
        });
    }

    let service = |host: &str| compose.services.contains_key(host);
    let mut listeners: Vec<(u16, &str, SocketAddr)> = Vec::new();
    if let Some(admin) = &config.admin {
        listeners.push((admin.listen.port(), "tcp", admin.listen));
    }
    for adapter in config.adapters.values() {
        match adapter {
            AdapterConfig::Sip(sip) => {
                for listener in &sip.listen {
                    let protocol = if listener.transport.as_str() == "udp" {
                        "udp"
                    } else {
                        "tcp"
                    };
                    listeners.push((listener.address.port(), protocol, listener.address));
                }
                problems.check(
                    sip.advertise.as_ref().map(|d| d.as_str()) == Some(GATEWAY_SERVICE),
                    || format!("gateway config: the sip adapter must advertise = \"{GATEWAY_SERVICE}\" (its name on the compose network), not {:?}", sip.advertise.as_ref().map(|d| d.as_str())),
                );
                let proxy = sip
                    .outbound_proxy
                    .as_ref()
                    .map(|p| p.as_str())
                    .unwrap_or("");
                let (proxy_host, _) = sip_uri_host_port(proxy);
                problems.check(proxy_host == KAMAILIO_SERVICE, || {
                    format!("gateway config: outbound_proxy {proxy:?} must name the `{KAMAILIO_SERVICE}` service")
                });
            }
            AdapterConfig::Xmpp(xmpp) => {
                problems.check(service(&xmpp.server.host), || {
                    format!(
                        "gateway config: the xmpp server {}:{} is not a compose service",
                        xmpp.server.host, xmpp.server.port
                    )
                });
            }
            AdapterConfig::Webhook(webhook) => {
                listeners.push((webhook.listen.port(), "tcp", webhook.listen));
            }
        }
    }
    for (port, protocol, address) in &listeners {
        problems.check(address.ip().is_unspecified(), || {
            format!("gateway config: listener {address} is not reachable from other containers; listen on 0.0.0.0")
        });
        if let Some((_, dockerfile)) = &gateway.build {
            let text = fs::read_to_string(dockerfile).unwrap_or_default();
            let exposed = dockerfile_instructions(&text)
                .iter()
                .filter(|(keyword, _)| keyword == "EXPOSE")
                .flat_map(|(_, args)| {
                    args.split_whitespace()
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                })
                .any(|spec| {
                    let (p, proto) = spec.split_once('/').unwrap_or((spec.as_str(), "tcp"));
                    p == port.to_string() && proto == *protocol
                });
            problems.check(exposed, || {
                format!(
                    "{}: EXPOSE {port}/{protocol} is missing",
                    dockerfile.display()
                )
            });
        }
    }
    for (port, protocol) in &gateway.published {
        problems.check(
            listeners
                .iter()
                .any(|(p, proto, _)| p == port && *proto == protocol.as_str()),
            || format!("compose: gateway publishes {port}/{protocol}, where the gateway configuration does not listen"),
        );
    }
    Some(config)
}

/// `sip:host:port;params` → (host, port or 5060).
fn sip_uri_host_port(uri: &str) -> (String, u16) {
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))
        .unwrap_or(uri);
    let rest = rest.split([';', '?']).next().unwrap_or("");
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    match rest.rsplit_once(':') {
        Some((host, port)) => (host.to_owned(), port.parse().unwrap_or(0)),
        None => (rest.to_owned(), 5060),
    }
}

/// Domains that SIP users write for users of the gateway's other networks: the home
/// domains of every non-SIP adapter and the alias domains on the SIP adapter.
fn foreign_domains_on_sip(config: &Config) -> (Vec<String>, Vec<String>) {
    let mut sip_domains = Vec::new();
    let mut sip_adapters = Vec::new();
    let mut foreign = Vec::new();
    for (name, adapter) in &config.adapters {
        match adapter {
            AdapterConfig::Sip(sip) => {
                sip_adapters.push(name.clone());
                sip_domains.extend(sip.domains.iter().map(|d| d.as_str().to_owned()));
            }
            AdapterConfig::Xmpp(xmpp) => {
                foreign.extend(xmpp.user_domains.iter().map(|d| d.as_str().to_owned()));
            }
            AdapterConfig::Webhook(webhook) => {
                for app in &webhook.apps {
                    foreign.extend(app.domains.iter().map(|d| d.as_str().to_owned()));
                }
            }
        }
    }
    for alias in &config.aliases {
        if sip_adapters.contains(&alias.on) {
            foreign.push(alias.alias.as_str().to_owned());
        }
    }
    (sip_domains, foreign)
}

// -------------------------------------------------------------------------------------------
// Prosody

/// Loads a Prosody configuration with Prosody's own parser and prints what the checks need.
const PROSODY_DUMP: &str = r#"
package.path = arg[1] .. "/?.lua;" .. package.path
package.cpath = arg[1] .. "/?.so;" .. package.cpath
local configmanager = require "core.configmanager"
local ok, level, err = configmanager.load(arg[2])
if not ok then
  io.stderr:write(tostring(level), ": ", tostring(err), "\n")
  os.exit(1)
end
local function list(value)
  if type(value) ~= "table" then return tostring(value) end
  local items = {}
  for _, item in ipairs(value) do items[#items + 1] = tostring(item) end
  return table.concat(items, ",")
end
for host, options in pairs(configmanager.getconfig()) do
  if host == "*" then
    print("global", "component_ports", list(options.component_ports))
    print("global", "component_interfaces", list(options.component_interfaces))
  elseif options.component_module == "component" then
    print("component", host, tostring(options.component_secret))
  elseif options.component_module == nil then
    print("virtualhost", host, "")
  end
end
"#;

#[derive(Debug, Default)]
struct ProsodyView {
    virtual_hosts: BTreeSet<String>,
    components: BTreeMap<String, String>,
    component_ports: Vec<String>,
    component_interfaces: Vec<String>,
}

fn read_prosody(config: &Path, env: &BTreeMap<String, String>) -> Result<ProsodyView, String> {
    let dir = TempDir::new("prosody-dump");
    let script = dir.path().join("dump.lua");
    fs::write(&script, PROSODY_DUMP).map_err(|e| e.to_string())?;
    let output = run(Command::new(LUA)
        .arg(&script)
        .arg(PROSODY_LIB)
        .arg(config)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(env))?;
    if !output.status.success() {
        return Err(format!(
            "{} cannot be read by Prosody's configuration parser:\n{}",
            config.display(),
            output_text(&output)
        ));
    }
    let mut view = ProsodyView::default();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let fields: Vec<&str> = line.splitn(3, '\t').collect();
        match fields.as_slice() {
            ["global", "component_ports", value] => {
                view.component_ports = value.split(',').map(str::to_owned).collect();
            }
            ["global", "component_interfaces", value] => {
                view.component_interfaces = value.split(',').map(str::to_owned).collect();
            }
            ["component", host, secret] => {
                view.components
                    .insert((*host).to_owned(), (*secret).to_owned());
            }
            ["virtualhost", host, _] => {
                view.virtual_hosts.insert((*host).to_owned());
            }
            _ => return Err(format!("unexpected line from the Prosody dump: {line:?}")),
        }
    }
    Ok(view)
}

/// `prosodyctl check config`, with the file in a copy of the container's /etc/prosody
/// layout (`certificates = "certs"` is relative to the configuration's directory).
fn prosodyctl_check(config: &Path, env: &BTreeMap<String, String>) -> Result<(), String> {
    let dir = TempDir::new("prosodyctl");
    fs::create_dir_all(dir.path().join("certs")).map_err(|e| e.to_string())?;
    let copy = dir.path().join("prosody.cfg.lua");
    fs::copy(config, &copy).map_err(|e| format!("{}: {e}", config.display()))?;
    let output = run(Command::new(PROSODYCTL)
        .arg("--config")
        .arg(&copy)
        .args(["check", "config"])
        .envs(env))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "prosodyctl check config fails for {}:\n{}",
            config.display(),
            output_text(&output)
        ))
    }
}

fn check_prosody(
    prosody: &Service,
    config: &Config,
    host: &dyn Fn(&str) -> Option<String>,
    label: &str,
    problems: &mut Problems,
) {
    let Some(mount) = prosody.bind_at(PROSODY_CONFIG) else {
        problems.add(format!(
            "compose: prosody: nothing is mounted at {PROSODY_CONFIG}"
        ));
        return;
    };
    if !mount.source.is_file() {
        return;
    }
    let env = match prosody.env(host) {
        Ok(env) => env,
        Err(error) => {
            problems.add(format!("compose: prosody.environment ({label}): {error}"));
            return;
        }
    };
    if label == "defaults" {
        if let Err(error) = prosodyctl_check(&mount.source, &env) {
            problems.add(error);
        }
    }
    let view = match read_prosody(&mount.source, &env) {
        Ok(view) => view,
        Err(error) => {
            problems.add(error);
            return;
        }
    };
    let file = mount.source.display();
    for adapter in config.adapters.values() {
        let AdapterConfig::Xmpp(xmpp) = adapter else {
            continue;
        };
        for domain in &xmpp.user_domains {
            problems.check(view.virtual_hosts.contains(domain.as_str()), || {
                format!(
                    "{file}: no VirtualHost {:?} (the gateway's user domain)",
                    domain.as_str()
                )
            });
        }
        for component in &xmpp.components {
            match view.components.get(component.domain.as_str()) {
                None => problems.add(format!(
                    "{file}: no Component {:?} (a component domain of the gateway)",
                    component.domain.as_str()
                )),
                Some(secret) => problems.check(secret == component.secret.expose(), || {
                    format!(
                        "{file} ({label}): the component_secret of {:?} differs from the gateway's secret",
                        component.domain.as_str()
                    )
                }),
            }
        }
        problems.check(
            view.component_ports.contains(&xmpp.server.port.to_string()),
            || {
                format!(
                    "{file}: component_ports {:?} do not include {}, where the gateway connects",
                    view.component_ports, xmpp.server.port
                )
            },
        );
        let loopback_only = view
            .component_interfaces
            .iter()
            .all(|i| i.starts_with("127.") || i == "::1" || i == "nil");
        problems.check(!loopback_only, || {
            format!(
                "{file}: component_interfaces {:?} are not reachable from the gateway's container",
                view.component_interfaces
            )
        });
    }
}

// -------------------------------------------------------------------------------------------
// Kamailio

/// `#!define NAME "value"` (or `#!define NAME value`) in a Kamailio configuration.
fn kamailio_define(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("#!define")?.trim_start();
        let value = rest.strip_prefix(name)?;
        if !value.starts_with(char::is_whitespace) {
            return None;
        }
        Some(value.trim().trim_matches('"').to_owned())
    })
}

fn check_kamailio(kamailio: &Service, gateway: &Service, config: &Config, problems: &mut Problems) {
    let Some(mount) = kamailio.bind_at(KAMAILIO_CONFIG) else {
        problems.add(format!(
            "compose: kamailio: nothing is mounted at {KAMAILIO_CONFIG}"
        ));
        return;
    };
    if !mount.source.is_file() {
        return;
    }
    let file = mount.source.display();
    match run(Command::new(KAMAILIO)
        .arg("-c")
        .arg("-f")
        .arg(&mount.source))
    {
        Ok(output) if output.status.success() => {}
        Ok(output) => problems.add(format!(
            "kamailio -c -f {file} fails:\n{}",
            output_text(&output)
        )),
        Err(error) => problems.add(error),
    }
    let text = fs::read_to_string(&mount.source).unwrap_or_default();
    let code: String = text
        .lines()
        .filter(|line| {
            let line = line.trim_start();
            let comment =
                line.starts_with("//") || (line.starts_with('#') && !line.starts_with("#!"));
            !comment
        })
        .collect::<Vec<_>>()
        .join("\n");

    // `kamailio -c` accepts calls of undefined routes (they are empty): every route(NAME)
    // has a route[NAME] block.
    let defined: BTreeSet<String> = code
        .match_indices("route[")
        .filter_map(|(at, _)| {
            let rest = &code[at + "route[".len()..];
            rest.find(']').map(|end| rest[..end].to_owned())
        })
        .collect();
    for (at, _) in code.match_indices("route(") {
        let before = code[..at].chars().next_back().unwrap_or(' ');
        if before.is_ascii_alphanumeric() || before == '_' {
            continue; // record_route(), loose_route(), ...
        }
        let rest = &code[at + "route(".len()..];
        let Some(end) = rest.find(')') else { continue };
        let name = &rest[..end];
        problems.check(defined.contains(name), || {
            format!("{file}: route({name}) is called but there is no route[{name}]")
        });
    }

    // The gateway's address, as the compose network names it.
    let gateway_uri = kamailio_define(&text, "GATEWAY").unwrap_or_default();
    let (host, port) = sip_uri_host_port(&gateway_uri);
    let sip_ports: Vec<u16> = config
        .adapters
        .values()
        .filter_map(|adapter| match adapter {
            AdapterConfig::Sip(sip) => Some(sip.listen.iter().map(|l| l.address.port())),
            _ => None,
        })
        .flatten()
        .collect();
    problems.check(host == gateway.name && sip_ports.contains(&port), || {
        format!(
            "{file}: #!define GATEWAY {gateway_uri:?} must be sip:{}:<a SIP listener port of the gateway {sip_ports:?}>",
            gateway.name
        )
    });

    // The domains it serves and forwards.
    let (sip_domains, foreign) = foreign_domains_on_sip(config);
    for domain in sip_domains.iter().chain(&foreign) {
        problems.check(code.contains(&format!("\"{domain}\"")), || {
            format!("{file}: the gateway's domain {domain:?} is not routed (not named in the configuration)")
        });
    }

    // The gateway's outbound proxy is this service on the port it listens on.
    let listen_port = code
        .lines()
        .find_map(|line| line.trim().strip_prefix("port=").map(str::trim))
        .and_then(|port| port.parse::<u16>().ok())
        .unwrap_or(5060);
    for adapter in config.adapters.values() {
        if let AdapterConfig::Sip(sip) = adapter {
            let proxy = sip
                .outbound_proxy
                .as_ref()
                .map(|p| p.as_str())
                .unwrap_or("");
            let (_, proxy_port) = sip_uri_host_port(proxy);
            problems.check(proxy_port == listen_port, || {
                format!("{file}: Kamailio listens on port {listen_port}, the gateway's outbound_proxy {proxy:?} says {proxy_port}")
            });
        }
    }
    problems.check(kamailio.publishes(listen_port, "udp"), || {
        format!("compose: kamailio does not publish {listen_port}/udp for the softphones")
    });
}

// -------------------------------------------------------------------------------------------
// The gateway's Dockerfile

/// The instructions of a Dockerfile: (KEYWORD, arguments), continuation lines joined.
fn dockerfile_instructions(text: &str) -> Vec<(String, String)> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if trimmed.starts_with('#') {
            continue; // a comment inside a continued instruction
        }
        if let Some(part) = trimmed.strip_suffix('\\') {
            current.push_str(part);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (keyword, args) = current
            .split_once(char::is_whitespace)
            .unwrap_or((&current, ""));
        instructions.push((keyword.to_ascii_uppercase(), args.trim().to_owned()));
        current.clear();
    }
    instructions
}

/// Paths (relative to the workspace root) that non-test code includes at compile time:
/// `include_str!`/`include_bytes!` in `crates/*/src` and `build.rs`, before the first
/// `#[cfg(test)]` of each file.
fn compile_time_includes(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, files);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let mut files = Vec::new();
    for krate in fs::read_dir(root.join("crates"))
        .into_iter()
        .flatten()
        .flatten()
    {
        walk(&krate.path().join("src"), &mut files);
        let build = krate.path().join("build.rs");
        if build.is_file() {
            files.push(build);
        }
    }
    let mut included = Vec::new();
    for file in files {
        let text = fs::read_to_string(&file).unwrap_or_default();
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for macro_name in ["include_str!(\"", "include_bytes!(\""] {
            for (at, _) in code.match_indices(macro_name) {
                let rest = &code[at + macro_name.len()..];
                let Some(end) = rest.find('"') else { continue };
                let target = normalize(&file.parent().unwrap_or(root).join(&rest[..end]));
                if let Ok(relative) = target.strip_prefix(root) {
                    included.push(relative.to_owned());
                }
            }
        }
    }
    included
}

/// Whether `path` is copied by one of the `sources` (each a file or a directory).
fn covered(path: &Path, sources: &[PathBuf]) -> bool {
    sources.iter().any(|source| path.starts_with(source))
}

/// Whether a `.dockerignore` pattern leaves `path` out of the build context (the plain and
/// `**/name` forms only).
fn ignored(path: &Path, pattern: &str) -> bool {
    let pattern = pattern.trim().trim_start_matches('/').trim_end_matches('/');
    if pattern.is_empty() || pattern.starts_with('#') || pattern.starts_with('!') {
        return false;
    }
    if let Some(name) = pattern.strip_prefix("**/") {
        return !name.contains(['*', '?', '[', '/'])
            && path.components().any(|c| c.as_os_str() == name);
    }
    !pattern.contains(['*', '?', '[']) && path.starts_with(pattern)
}

fn check_dockerfile(root: &Path, text: &str) -> Problems {
    let mut problems = Problems::default();
    let instructions = dockerfile_instructions(text);
    let stages = instructions.iter().filter(|(k, _)| k == "FROM").count();
    problems.check(stages >= 2, || {
        format!("Dockerfile: {stages} stage(s); expected a build stage and a slim runtime stage")
    });
    let runtime_from = instructions
        .iter()
        .rev()
        .find(|(k, _)| k == "FROM")
        .map(|(_, args)| args.clone())
        .unwrap_or_default();
    problems.check(runtime_from.contains("slim"), || {
        format!("Dockerfile: the runtime stage is {runtime_from:?}, not a slim image")
    });
    let last_from = instructions
        .iter()
        .rposition(|(k, _)| k == "FROM")
        .unwrap_or(0);
    let user = instructions[last_from..]
        .iter()
        .rev()
        .find(|(k, _)| k == "USER")
        .map(|(_, args)| args.clone());
    problems.check(
        user.as_deref()
            .is_some_and(|u| !matches!(u, "root" | "0" | "0:0")),
        || format!("Dockerfile: the runtime stage runs as {user:?}; expected a non-root USER"),
    );
    problems.check(
        instructions.iter().any(|(k, args)| {
            k == "RUN"
                && args.contains("cargo build")
                && args.contains("--release")
                && args.contains("--locked")
                && args.contains("-p cpim-gateway")
        }),
        || "Dockerfile: no `cargo build --release --locked -p cpim-gateway`".to_owned(),
    );
    problems.check(
        instructions[last_from..].iter().any(|(k, args)| {
            k == "COPY" && args.contains("--from=") && args.contains("cpim-gateway")
        }),
        || "Dockerfile: the runtime stage does not copy the binary from the build stage".to_owned(),
    );

    // What the stages copy from the context (the workspace root).
    let mut sources: Vec<PathBuf> = Vec::new();
    for (keyword, args) in &instructions {
        if keyword != "COPY" && keyword != "ADD" {
            continue;
        }
        let words: Vec<&str> = args
            .split_whitespace()
            .filter(|word| !word.starts_with("--"))
            .collect();
        if args.contains("--from=") || words.len() < 2 {
            continue;
        }
        for source in &words[..words.len() - 1] {
            let source = normalize(Path::new(source));
            problems.check(root.join(&source).exists(), || {
                format!(
                    "Dockerfile: COPY source {} does not exist",
                    source.display()
                )
            });
            sources.push(source);
        }
    }
    let manifest: toml::Table = fs::read_to_string(root.join("Cargo.toml"))
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_default();
    let members: Vec<PathBuf> = manifest
        .get("workspace")
        .and_then(|w| w.get("members"))
        .and_then(|m| m.as_array())
        .map(|members| {
            members
                .iter()
                .filter_map(|m| m.as_str().map(PathBuf::from))
                .collect()
        })
        .unwrap_or_default();
    problems.check(!members.is_empty(), || {
        "Cargo.toml: no workspace members found".to_owned()
    });
    let required = [PathBuf::from("Cargo.toml"), PathBuf::from("Cargo.lock")]
        .into_iter()
        .chain(members)
        .chain(compile_time_includes(root));
    for path in required {
        problems.check(covered(&path, &sources), || {
            format!(
                "Dockerfile: the build stage does not copy {} (workspace manifest, member, or a file included at compile time)",
                path.display()
            )
        });
    }
    let ignore = fs::read_to_string(root.join(".dockerignore")).unwrap_or_default();
    for source in &sources {
        for pattern in ignore.lines() {
            problems.check(!ignored(source, pattern), || {
                format!(
                    ".dockerignore: {pattern:?} leaves {} out of the build context",
                    source.display()
                )
            });
        }
    }
    problems.check(
        ignore
            .lines()
            .any(|p| p.trim().trim_matches('/') == "target"),
        || ".dockerignore: target/ is sent to the build (add `target`)".to_owned(),
    );
    problems
}

// -------------------------------------------------------------------------------------------
// The tests

#[test]
fn compose_file_services_and_mounted_configs_are_valid() {
    let compose = workspace_root().join("docker/compose.yaml");
    check_compose(&compose).assert_none("docker/compose.yaml");
}

#[test]
fn gateway_dockerfile_builds_the_whole_workspace_as_non_root() {
    let root = workspace_root();
    let text = fs::read_to_string(root.join("docker/Dockerfile")).expect("docker/Dockerfile");
    check_dockerfile(&root, &text).assert_none("docker/Dockerfile");
}

#[test]
fn the_gateway_is_built_from_the_workspace_root() {
    let root = workspace_root();
    let mut problems = Problems::default();
    let compose = read_compose(&root.join("docker/compose.yaml"), &mut problems)
        .expect("compose file readable");
    problems.assert_none("docker/compose.yaml");
    let build = compose
        .services
        .get(GATEWAY_SERVICE)
        .and_then(|service| service.build.clone());
    assert_eq!(
        build,
        Some((root.clone(), root.join("docker/Dockerfile"))),
        "the gateway service builds docker/Dockerfile with the repository root as context"
    );
    assert_eq!(compose.dir, root.join("docker"));
}

#[test]
fn compose_interpolation_follows_compose() {
    let env = |name: &str| match name {
        "SET" => Some("value".to_owned()),
        "EMPTY" => Some(String::new()),
        _ => None,
    };
    let cases = [
        ("${SET:-d}", "value"),
        ("${EMPTY:-d}", "d"),
        ("${EMPTY-d}", ""),
        ("${UNSET:-d}", "d"),
        ("${UNSET-d}", "d"),
        ("${UNSET}", ""),
        ("a$SET-b", "avalue-b"),
        ("$$HOME", "$HOME"),
    ];
    for (text, expected) in cases {
        assert_eq!(interpolate(text, &env).as_deref(), Ok(expected), "{text}");
    }
    assert!(interpolate("${UNSET:?needed}", &env).is_err());
}

// --- The checks catch what they are for, on a broken copy of docker/ ----------------------

/// A copy of the repository's `docker/` in a temporary "repository".
struct DockerCopy {
    dir: TempDir,
}

impl DockerCopy {
    fn new(what: &str) -> DockerCopy {
        fn copy(from: &Path, to: &Path) {
            fs::create_dir_all(to).expect("mkdir");
            for entry in fs::read_dir(from).expect("readable").flatten() {
                let path = entry.path();
                let target = to.join(entry.file_name());
                if path.is_dir() {
                    copy(&path, &target);
                } else {
                    fs::copy(&path, &target).expect("copy");
                }
            }
        }
        let dir = TempDir::new(what);
        copy(&workspace_root().join("docker"), &dir.path().join("docker"));
        DockerCopy { dir }
    }

    fn file(&self, relative: &str) -> PathBuf {
        self.dir.path().join("docker").join(relative)
    }

    fn edit(&self, relative: &str, from: &str, to: &str) -> &Self {
        let path = self.file(relative);
        let text = fs::read_to_string(&path).expect("readable");
        assert!(text.contains(from), "{relative} does not contain {from:?}");
        fs::write(&path, text.replacen(from, to, 1)).expect("writable");
        self
    }

    fn check(&self) -> Problems {
        check_compose(&self.file("compose.yaml"))
    }
}

#[test]
fn an_unbroken_copy_passes() {
    DockerCopy::new("unbroken")
        .check()
        .assert_none("copy of docker/");
}

#[test]
fn a_missing_mounted_file_is_caught() {
    let copy = DockerCopy::new("missing");
    fs::remove_file(copy.file("kamailio/kamailio.cfg")).expect("remove");
    copy.check()
        .assert_mentions(&["bind-mounted ./kamailio/kamailio.cfg", "does not exist"]);
}

#[test]
fn a_missing_build_context_is_caught() {
    let copy = DockerCopy::new("context");
    fs::remove_dir_all(copy.file("prosody")).expect("remove");
    copy.check().assert_mentions(&[
        "prosody: build context",
        "bind-mounted ./prosody/prosody.cfg.lua",
    ]);
}

#[test]
fn a_kamailio_syntax_error_is_caught() {
    let copy = DockerCopy::new("kamailio-syntax");
    copy.edit("kamailio/kamailio.cfg", "\t\texit;\n", "\t\texit\n");
    copy.check()
        .assert_mentions(&["kamailio -c -f", "syntax error"]);
}

#[test]
fn a_kamailio_call_of_an_unknown_function_or_route_is_caught() {
    let copy = DockerCopy::new("kamailio-function");
    copy.edit(
        "kamailio/kamailio.cfg",
        "fix_nated_register();",
        "fix_natted_register();",
    )
    .edit(
        "kamailio/kamailio.cfg",
        "route(TOGATEWAY);",
        "route(TO_GATEWAY);",
    );
    copy.check().assert_mentions(&[
        "fix_natted_register",
        "route(TO_GATEWAY) is called but there is no route[TO_GATEWAY]",
    ]);
}

#[test]
fn kamailio_not_forwarding_a_gateway_domain_is_caught() {
    let copy = DockerCopy::new("kamailio-domain");
    copy.edit(
        "kamailio/kamailio.cfg",
        "\"app.localhost\"",
        "\"apps.localhost\"",
    )
    .edit("kamailio/kamailio.cfg", "sip:gateway:5060", "sip:gw:5060");
    copy.check().assert_mentions(&[
        "\"app.localhost\" is not routed",
        "#!define GATEWAY \"sip:gw:5060;transport=udp\"",
    ]);
}

#[test]
fn a_prosody_lua_error_is_caught() {
    let copy = DockerCopy::new("prosody-lua");
    copy.edit(
        "prosody/prosody.cfg.lua",
        "c2s_ports = { 5222 }",
        "c2s_ports = { 5222 ",
    );
    copy.check().assert_mentions(&[
        "prosodyctl check config fails",
        "Prosody's configuration parser",
    ]);
}

#[test]
fn a_prosody_secret_or_component_mismatch_is_caught() {
    let copy = DockerCopy::new("prosody-secret");
    copy.edit(
        "prosody/prosody.cfg.lua",
        "component_secret = ENV_CPIM_XMPP_SECRET or \"cpim-dev-secret\"",
        "component_secret = \"cpim-dev-secret\"",
    )
    .edit(
        "prosody/prosody.cfg.lua",
        "Component \"sip.gw.xmpp.localhost\"",
        "Component \"sip.gateway.xmpp.localhost\"",
    );
    copy.check().assert_mentions(&[
        "(CPIM_XMPP_SECRET set on the host): the component_secret of \"gw.xmpp.localhost\" differs",
        "no Component \"sip.gw.xmpp.localhost\"",
    ]);
}

#[test]
fn prosody_components_on_loopback_only_are_caught() {
    let copy = DockerCopy::new("prosody-loopback");
    copy.edit(
        "prosody/prosody.cfg.lua",
        "component_interfaces = { \"*\" }",
        "component_interfaces = { \"127.0.0.1\" }",
    );
    copy.check()
        .assert_mentions(&["component_interfaces [\"127.0.0.1\"] are not reachable"]);
}

#[test]
fn an_invalid_gateway_config_is_caught() {
    let copy = DockerCopy::new("gateway-config");
    copy.edit(
        "gateway/gateway.toml",
        "max_udp_message = 1300",
        "max_udp_mesage = 1300",
    );
    copy.check()
        .assert_mentions(&["is not a valid gateway configuration", "max_udp_mesage"]);
}

#[test]
fn a_gateway_config_for_loopback_or_without_advertise_is_caught() {
    let copy = DockerCopy::new("gateway-loopback");
    copy.edit(
        "gateway/gateway.toml",
        "listen = \"0.0.0.0:8080\"",
        "listen = \"127.0.0.1:8080\"",
    )
    .edit("gateway/gateway.toml", "advertise = \"gateway\"\n", "");
    copy.check().assert_mentions(&[
        "listener 127.0.0.1:8080 is not reachable",
        "advertise = \"gateway\"",
    ]);
}

#[test]
fn a_secret_not_passed_to_the_container_is_caught() {
    let copy = DockerCopy::new("environment");
    copy.edit(
        "compose.yaml",
        "      CPIM_WEBHOOK_TOKEN: ${CPIM_WEBHOOK_TOKEN:-dev-token-change-me}\n",
        "",
    )
    .edit(
        "compose.yaml",
        "    environment:\n      CPIM_XMPP_SECRET: ${CPIM_XMPP_SECRET:-cpim-dev-secret}\n    volumes:",
        "    volumes:",
    );
    copy.check().assert_mentions(&[
        "gateway.environment does not pass CPIM_WEBHOOK_TOKEN",
        "(CPIM_XMPP_SECRET set on the host): the component_secret of \"gw.xmpp.localhost\" differs",
    ]);
}

#[test]
fn compose_mistakes_are_caught() {
    let copy = DockerCopy::new("compose");
    copy.edit("compose.yaml", "\"127.0.0.1:5222:5222\"", "52:22")
        .edit("compose.yaml", "  kamailio:\n", "  kamailio_:\n")
        .edit(
            "compose.yaml",
            "      - prosody-data:/var/lib/prosody",
            "      - prosody-state:/var/lib/prosody",
        );
    copy.check().assert_mentions(&[
        "port 3142 must be a quoted string",
        "no service `kamailio`",
        "gateway depends on kamailio, which is not a service",
        "volume prosody-state is not declared",
    ]);
}

#[test]
fn dockerfile_mistakes_are_caught() {
    let root = workspace_root();
    let text = fs::read_to_string(root.join("docker/Dockerfile")).expect("docker/Dockerfile");
    let broken = text
        .replace(
            "COPY docs/webhook-openapi.json ./docs/webhook-openapi.json\n",
            "",
        )
        .replace("USER cpim\n", "")
        .replace("--locked ", "");
    check_dockerfile(&root, &broken).assert_mentions(&[
        "does not copy docs/webhook-openapi.json",
        "expected a non-root USER",
        "no `cargo build --release --locked -p cpim-gateway`",
    ]);
    let without_sip = text.replace(
        "COPY crates ./crates",
        "COPY crates/cpim crates/broker crates/xmpp crates/webhook crates/gateway ./crates/",
    );
    check_dockerfile(&root, &without_sip).assert_mentions(&["does not copy crates/sip"]);
}
