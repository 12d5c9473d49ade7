//! Tests of `gateway.toml` loading and validation through the public API.

#![allow(clippy::disallowed_methods)] // tests wait with deadlines and measure

use std::path::{Path, PathBuf};

use cpim_gateway::config::{
    AdapterConfig, AdapterKind, Config, ConfigError, SipTransport, XmppMessageType,
};

/// A valid configuration with one adapter of each type, every optional key left out.
const BASE: &str = r#"
[adapters.sip]
type = "sip"
domains = ["sip.localhost"]
listen = [
  { transport = "udp", address = "127.0.0.1:5060" },
  { transport = "tcp", address = "127.0.0.1:5060" },
]

[adapters.xmpp]
type = "xmpp"
server = "127.0.0.1:5347"
user_domains = ["xmpp.localhost"]

[[adapters.xmpp.components]]
domain = "gw.xmpp.localhost"
secret = "${SECRET:-component-secret}"

[adapters.webhook]
type = "webhook"
listen = "127.0.0.1:8080"

[[adapters.webhook.apps]]
name = "demo"
domains = ["app.localhost"]
token = "${TOKEN:-app-token-0123456789}"
"#;

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("gateway.toml"), no_env)
}

fn parse_with(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    Config::parse(text, Path::new("gateway.toml"), move |name| {
        vars.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    })
}

/// The error message for `text`, which must be invalid.
fn error(text: &str) -> String {
    match parse(text) {
        Ok(config) => panic!("expected an invalid configuration, got {config:?}"),
        Err(error) => error.to_string(),
    }
}

/// `BASE` with `from` replaced by `to` (which must occur).
fn base_with(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "BASE does not contain {from:?}");
    BASE.replacen(from, to, 1)
}

/// The 1-based line of the first occurrence of `needle` in `text`.
fn line_of(text: &str, needle: &str) -> usize {
    let offset = text.find(needle).expect("needle is in the text");
    text[..offset].matches('\n').count() + 1
}

fn assert_contains(haystack: &str, needles: &[&str]) {
    for needle in needles {
        assert!(
            haystack.contains(needle),
            "expected {needle:?} in:\n{haystack}"
        );
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Whether `path` (relative to the workspace root) looks like a gateway configuration.
fn looks_like_gateway_config(path: &Path) -> bool {
    const NOT_GATEWAY: &[&str] = &[
        "Cargo.toml",
        "rustfmt.toml",
        ".rustfmt.toml",
        "clippy.toml",
        ".clippy.toml",
        "deny.toml",
        "rust-toolchain.toml",
    ];
    let name = path
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("");
    path.extension()
        .is_some_and(|extension| extension == "toml")
        && !NOT_GATEWAY.contains(&name)
        && !path.components().any(|component| {
            let component = component.as_os_str();
            component == "bad" || component == "invalid"
        })
}

/// Every `*.toml` file under `dir`, skipping build output, VCS data, fuzzing and hidden folders.
fn toml_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).expect("readable directory");
    for entry in entries {
        let path = entry.expect("readable directory entry").path();
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("");
        if path.is_dir() {
            if !(name == "target" || name == "fuzz" || name.starts_with('.')) {
                toml_files(&path, found);
            }
        } else if name.ends_with(".toml") {
            found.push(path);
        }
    }
}

fn repository_configs() -> (Vec<PathBuf>, Vec<PathBuf>) {
    let root = workspace_root();
    let mut files = Vec::new();
    toml_files(&root, &mut files);
    files.sort();
    let relative = |path: &PathBuf| path.strip_prefix(&root).unwrap_or(path).to_owned();
    let (valid, other): (Vec<_>, Vec<_>) = files
        .into_iter()
        .partition(|path| looks_like_gateway_config(&relative(path)));
    let invalid = other
        .into_iter()
        .filter(|path| {
            let relative = relative(path);
            relative
                .extension()
                .is_some_and(|extension| extension == "toml")
                && relative
                    .components()
                    .any(|c| c.as_os_str() == "bad" || c.as_os_str() == "invalid")
        })
        .collect();
    (valid, invalid)
}

/// Environment for the repository's sample files: the real variable when set, else a
/// placeholder, so that samples may require variables without defaults.
fn sample_env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .or_else(|| Some(format!("placeholder-for-{name}")))
}

#[test]
fn every_gateway_config_in_the_repository_is_valid() {
    let (valid, _) = repository_configs();
    assert!(
        valid.iter().any(|path| path.ends_with("gateway.toml")),
        "the top-level gateway.toml was not found among {valid:?}"
    );
    for path in &valid {
        if let Err(error) = Config::load_with_env(path, sample_env) {
            panic!("{} is not a valid gateway config:\n{error}", path.display());
        }
    }
}

#[test]
fn every_config_under_an_invalid_folder_fails() {
    let (_, invalid) = repository_configs();
    assert!(
        !invalid.is_empty(),
        "expected the files under tests/data/invalid"
    );
    for path in &invalid {
        let result = Config::load_with_env(path, no_env);
        assert!(result.is_err(), "{} should be invalid", path.display());
    }
}

#[test]
fn sample_gateway_toml_is_the_loopback_quickstart() {
    let path = workspace_root().join("gateway.toml");
    let config = Config::load_with_env(&path, no_env).expect("the sample is valid");
    assert_eq!(config.gateway.data_dir.as_str(), "data");
    assert_eq!(config.gateway.max_hops, 70);
    let admin = config.admin.as_ref().expect("admin listener configured");
    assert_eq!(admin.listen.to_string(), "127.0.0.1:9090");
    assert_eq!(config.adapters.len(), 3);

    let Some(AdapterConfig::Sip(sip)) = config.adapters.get("sip") else {
        panic!("adapter `sip` is a sip adapter");
    };
    assert_eq!(sip.domains[0].as_str(), "sip.localhost");
    let listeners: Vec<_> = sip
        .listen
        .iter()
        .map(|listener| (listener.transport, listener.address.to_string()))
        .collect();
    assert_eq!(
        listeners,
        [
            (SipTransport::Udp, "127.0.0.1:5060".to_owned()),
            (SipTransport::Tcp, "127.0.0.1:5060".to_owned())
        ]
    );

    let Some(AdapterConfig::Xmpp(xmpp)) = config.adapters.get("xmpp") else {
        panic!("adapter `xmpp` is an xmpp adapter");
    };
    assert_eq!(xmpp.server.to_string(), "127.0.0.1:5347");
    assert_eq!(xmpp.user_domains[0].as_str(), "xmpp.localhost");
    assert_eq!(xmpp.components[0].domain.as_str(), "gw.xmpp.localhost");
    assert_eq!(xmpp.components[0].secret.expose(), "cpim-dev-secret");

    let Some(AdapterConfig::Webhook(webhook)) = config.adapters.get("webhook") else {
        panic!("adapter `webhook` is a webhook adapter");
    };
    assert_eq!(webhook.listen.to_string(), "127.0.0.1:8080");
    let app = &webhook.apps[0];
    assert_eq!(app.name, "demo");
    assert_eq!(app.domains[0].as_str(), "app.localhost");
    assert_eq!(app.token.expose(), "dev-token-change-me");
    assert_eq!(
        app.url.as_ref().map(|url| url.as_str()),
        Some("http://127.0.0.1:8081/hooks")
    );

    let every_listener_is_loopback = sip.listen.iter().all(|l| l.address.ip().is_loopback())
        && webhook.listen.ip().is_loopback()
        && admin.listen.ip().is_loopback();
    assert!(every_listener_is_loopback);
}

#[test]
fn defaults_apply_when_keys_are_left_out() {
    let config = parse(BASE).expect("BASE is valid");
    assert_eq!(config.gateway.data_dir.as_str(), "data");
    assert_eq!(config.gateway.max_hops, 70);
    assert!(config.admin.is_none());
    let Some(AdapterConfig::Sip(sip)) = config.adapters.get("sip") else {
        panic!("sip adapter");
    };
    assert_eq!(sip.max_udp_message, 1300);
    assert!(sip.outbound_proxy.is_none());
    let Some(AdapterConfig::Xmpp(xmpp)) = config.adapters.get("xmpp") else {
        panic!("xmpp adapter");
    };
    assert_eq!(xmpp.message_type, XmppMessageType::Normal);
    assert_eq!(xmpp.ping_interval_secs, 30);
    let kinds: Vec<AdapterKind> = config.adapters.values().map(AdapterConfig::kind).collect();
    assert_eq!(
        kinds,
        [AdapterKind::Sip, AdapterKind::Webhook, AdapterKind::Xmpp]
    );
}

#[test]
fn data_dir_is_relative_to_the_config_file() {
    let config =
        Config::parse(BASE, Path::new("/etc/cpim/gateway.toml"), no_env).expect("BASE is valid");
    assert_eq!(config.data_dir(), Path::new("/etc/cpim/data"));
    let text = format!("[gateway]\ndata_dir = \"/var/lib/cpim\"\n{BASE}");
    let config = Config::parse(&text, Path::new("/etc/cpim/gateway.toml"), no_env).expect("valid");
    assert_eq!(config.data_dir(), Path::new("/var/lib/cpim"));
}

#[test]
fn misspelled_key_reports_line_column_and_expected_keys() {
    let text = base_with("listen = [", "listn = [");
    let message = error(&text);
    let line = line_of(&text, "listn");
    assert_contains(
        &message,
        &[
            &format!("gateway.toml:{line}:1: "),
            "adapters.sip.listn",
            "unknown field `listn`, expected one of `domains`, `listen`, `outbound_proxy`, \
             `max_udp_message`",
            "\n  hint: check the spelling",
        ],
    );
}

#[test]
fn misspelled_key_in_gateway_table_lists_its_keys() {
    let text = format!("[gateway]\nmax_hop = 5\n{BASE}");
    let message = error(&text);
    assert_contains(
        &message,
        &[
            "gateway.toml:2:1: gateway.max_hop: unknown field `max_hop`",
            "expected one of `data_dir`, `max_hops`, `queue_per_destination`, `queue_total`, `dedup_window_secs`, `presence_interval_secs`",
        ],
    );
}

#[test]
fn misspelled_key_in_an_array_of_tables_is_located() {
    let text = base_with("token = ", "tokn = ");
    let line = line_of(&text, "tokn");
    assert_contains(
        &error(&text),
        &[
            &format!("gateway.toml:{line}:1: adapters.webhook.apps[0].tokn"),
            "unknown field `tokn`, expected one of `name`, `domains`, `token`, `url`",
        ],
    );
}

#[test]
fn misspelled_top_level_table_lists_the_tables() {
    let text = format!("[gatway]\n{BASE}");
    assert_contains(
        &error(&text),
        &[
            "gateway.toml:1:2: ",
            "unknown field `gatway`, expected one of `gateway`, `admin`, `adapters`",
        ],
    );
}

#[test]
fn unknown_adapter_type_lists_the_types() {
    let text = base_with("type = \"xmpp\"", "type = \"jabber\"");
    let line = line_of(&text, "\"jabber\"");
    assert_contains(
        &error(&text),
        &[
            &format!("gateway.toml:{line}:8: adapters.xmpp.type: unknown variant `jabber`"),
            "expected one of `sip`, `xmpp`, `webhook`",
        ],
    );
}

#[test]
fn missing_adapter_type_says_how_to_add_it() {
    let text = base_with("type = \"sip\"\n", "");
    assert_contains(
        &error(&text),
        &[
            "adapters.sip: missing field `type`",
            "hint: add `type = \"sip\"`",
        ],
    );
}

#[test]
fn wrong_value_type_is_located() {
    let text = base_with("server = \"127.0.0.1:5347\"", "server = 5347");
    let line = line_of(&text, "5347\n");
    assert_contains(
        &error(&text),
        &[&format!(
            "gateway.toml:{line}:10: adapters.xmpp.server: invalid type: integer `5347`"
        )],
    );
}

#[test]
fn toml_syntax_error_is_located() {
    let text = base_with(
        "domains = [\"sip.localhost\"]",
        "domains = [\"sip.localhost\"",
    );
    let message = error(&text);
    let line = line_of(&text, "domains = [\"sip.localhost\"");
    assert!(
        message.starts_with("gateway.toml:") && message.contains("hint: this is not valid TOML"),
        "{message}"
    );
    let reported: usize = message
        .split(':')
        .nth(1)
        .and_then(|line| line.parse().ok())
        .expect("a line number");
    assert!(reported >= line, "{message}");
}

#[test]
fn env_set_variable_is_substituted() {
    let config = parse_with(BASE, &[("SECRET", "from-env")]).expect("valid");
    let Some(AdapterConfig::Xmpp(xmpp)) = config.adapters.get("xmpp") else {
        panic!("xmpp adapter");
    };
    assert_eq!(xmpp.components[0].secret.expose(), "from-env");
}

#[test]
fn env_default_is_used_when_unset() {
    let config = parse(BASE).expect("valid");
    let Some(AdapterConfig::Webhook(webhook)) = config.adapters.get("webhook") else {
        panic!("webhook adapter");
    };
    assert_eq!(webhook.apps[0].token.expose(), "app-token-0123456789");
}

#[test]
fn env_unset_variable_is_an_error_at_its_position() {
    let text = base_with("${SECRET:-component-secret}", "${CPIM_XMPP_SECRET}");
    let line = line_of(&text, "${CPIM_XMPP_SECRET}");
    assert_contains(
        &error(&text),
        &[&format!(
            "gateway.toml:{line}:10: adapters.xmpp.components[0].secret: environment variable \
             CPIM_XMPP_SECRET is not set; export it or write ${{CPIM_XMPP_SECRET:-default}}"
        )],
    );
}

#[test]
fn env_double_dollar_is_a_literal_dollar() {
    let text = base_with(
        "${TOKEN:-app-token-0123456789}",
        "pa$$word-0123456789-$${TOKEN}",
    );
    let config = parse_with(&text, &[("TOKEN", "unused")]).expect("valid");
    let Some(AdapterConfig::Webhook(webhook)) = config.adapters.get("webhook") else {
        panic!("webhook adapter");
    };
    assert_eq!(
        webhook.apps[0].token.expose(),
        "pa$word-0123456789-${TOKEN}"
    );
}

#[test]
fn env_lone_dollar_is_an_error() {
    let text = base_with("${TOKEN:-app-token-0123456789}", "pa$word");
    assert_contains(
        &error(&text),
        &["apps[0].token: a lone `$` must be written `$$`"],
    );
}

#[test]
fn env_applies_to_plain_strings_too() {
    let text = format!("[gateway]\ndata_dir = \"${{STATE:-/tmp/x}}/cpim\"\n{BASE}");
    let config = parse_with(&text, &[("STATE", "/srv")]).expect("valid");
    assert_eq!(config.gateway.data_dir.as_str(), "/srv/cpim");
}

#[test]
fn secrets_never_appear_in_debug_output() {
    let config = parse_with(
        BASE,
        &[
            ("SECRET", "xyzzy-secret"),
            ("TOKEN", "plugh-token-0123456789"),
        ],
    )
    .expect("valid");
    let debug = format!("{config:?}");
    assert!(!debug.contains("xyzzy-secret"), "{debug}");
    assert!(!debug.contains("plugh-token-0123456789"), "{debug}");
    assert!(debug.contains("***"));
    let summary = cpim_gateway::commands::summary(&config);
    assert!(!summary.contains("xyzzy-secret") && !summary.contains("plugh-token-0123456789"));
}

#[test]
fn rule_domain_syntax() {
    let text = base_with("[\"sip.localhost\"]", "[\"SIP.localhost\"]");
    let line = line_of(&text, "\"SIP.localhost\"");
    assert_contains(
        &error(&text),
        &[
            &format!("gateway.toml:{line}:12: adapters.sip.domains[0]: invalid domain"),
            "lowercase ASCII letters",
        ],
    );
    let text = base_with("[\"xmpp.localhost\"]", "[\"xmpp..localhost\"]");
    assert_contains(
        &error(&text),
        &["user_domains[0]: invalid domain", "empty label"],
    );
}

#[test]
fn rule_domain_owned_by_two_adapters() {
    let text = base_with("[\"xmpp.localhost\"]", "[\"sip.localhost\"]");
    let line = line_of(&text, "user_domains");
    assert_contains(
        &error(&text),
        &[
            &format!("gateway.toml:{line}:17: adapters.xmpp.user_domains[0]"),
            "domain `sip.localhost` of adapter `xmpp` is already owned by adapter `sip` \
             (at adapters.sip.domains[0])",
            "hint: each domain is routed to exactly one adapter",
        ],
    );
}

#[test]
fn rule_webhook_app_domain_collides_with_another_adapter() {
    let text = base_with(
        "[\"app.localhost\"]",
        "[\"app.localhost\", \"gw.xmpp.localhost\"]",
    );
    assert_contains(
        &error(&text),
        &[
            "adapters.webhook.apps[0].domains[1]: domain `gw.xmpp.localhost` of adapter \
             `webhook` is already owned by adapter `xmpp`",
            "a webhook app's domains must not collide with other adapters' domains",
        ],
    );
}

#[test]
fn rule_domain_listed_twice_in_one_adapter() {
    let text = base_with(
        "[\"app.localhost\"]",
        "[\"app.localhost\", \"app.localhost\"]",
    );
    assert_contains(
        &error(&text),
        &["apps[0].domains[1]: domain `app.localhost` is listed twice in adapter `webhook`"],
    );
}

#[test]
fn rule_duplicate_listener_across_adapters() {
    let text = base_with("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:5060\"");
    let line = line_of(&text, "listen = \"127.0.0.1:5060\"");
    assert_contains(
        &error(&text),
        &[
            &format!(
                "gateway.toml:{line}:10: adapters.webhook.listen: the http listener of \
                      adapter `webhook` on 127.0.0.1:5060 clashes with tcp listener of adapter \
                      `sip` on 127.0.0.1:5060 (at adapters.sip.listen[1].address)"
            ),
            "hint: two listeners of the same protocol need different ports",
        ],
    );
}

#[test]
fn rule_duplicate_listener_with_admin_and_wildcard() {
    let text = format!("[admin]\nlisten = \"0.0.0.0:8080\"\n{BASE}");
    assert_contains(
        &error(&text),
        &[
            "adapters.webhook.listen: the http listener of adapter `webhook` on 127.0.0.1:8080 \
           clashes with the admin listener on 0.0.0.0:8080 (at admin.listen)",
        ],
    );
}

#[test]
fn udp_and_tcp_may_share_an_address() {
    assert!(parse(BASE).is_ok());
}

#[test]
fn rule_required_lists_must_not_be_empty() {
    let cases = [
        ("domains = [\"sip.localhost\"]", "domains = []", "adapters.sip.domains: `domains` of sip adapter `sip` must list at least one entry"),
        ("listen = [\n  { transport = \"udp\", address = \"127.0.0.1:5060\" },\n  { transport = \"tcp\", address = \"127.0.0.1:5060\" },\n]", "listen = []", "adapters.sip.listen: `listen` of sip adapter `sip` must list at least one entry"),
        ("user_domains = [\"xmpp.localhost\"]", "user_domains = []", "adapters.xmpp.user_domains: `user_domains` of xmpp adapter `xmpp`"),
        ("[[adapters.xmpp.components]]\ndomain = \"gw.xmpp.localhost\"\nsecret = \"${SECRET:-component-secret}\"\n", "", "adapters.xmpp.components: `components` of xmpp adapter `xmpp` must list at least one entry"),
        ("[[adapters.webhook.apps]]\nname = \"demo\"\ndomains = [\"app.localhost\"]\ntoken = \"${TOKEN:-app-token-0123456789}\"\n", "", "adapters.webhook.apps: `apps` of webhook adapter `webhook` must list at least one entry"),
        ("domains = [\"app.localhost\"]", "domains = []", "adapters.webhook.apps[0].domains: `domains` of webhook app `demo`"),
    ];
    for (from, to, expected) in cases {
        let message = error(&base_with(from, to));
        assert_contains(&message, &[expected, "hint: "]);
    }
}

#[test]
fn rule_no_adapters() {
    assert_contains(
        &error("[gateway]\nmax_hops = 5\n"),
        &[
            "gateway.toml: adapters: no adapters are configured",
            "hint: add at least one",
        ],
    );
}

#[test]
fn rule_tls_requires_certificate_and_private_key() {
    let text = base_with("transport = \"tcp\"", "transport = \"tls\"");
    let line = line_of(&text, "transport = \"tls\"");
    assert_contains(
        &error(&text),
        &[
            &format!(
                "gateway.toml:{line}:3: adapters.sip.listen[1]: tls listener \
                      127.0.0.1:5060 of sip adapter `sip` has no `certificate`"
            ),
            "adapters.sip.listen[1]: tls listener 127.0.0.1:5060 of sip adapter `sip` has no \
             `private_key`",
            "hint: a tls listener needs `certificate = \"cert.pem\"`",
        ],
    );
    let text = base_with(
        "transport = \"tcp\", address = \"127.0.0.1:5060\"",
        "transport = \"tls\", address = \"127.0.0.1:5061\", certificate = \"c.pem\", \
         private_key = \"k.pem\"",
    );
    assert!(parse(&text).is_ok());
}

#[test]
fn rule_certificate_only_for_tls() {
    let text = base_with(
        "transport = \"udp\", address = \"127.0.0.1:5060\"",
        "transport = \"udp\", address = \"127.0.0.1:5060\", certificate = \"c.pem\"",
    );
    assert_contains(
        &error(&text),
        &["adapters.sip.listen[0].certificate: `certificate` is only used by tls listeners"],
    );
}

#[test]
fn rule_adapter_name_syntax() {
    let text = base_with("[adapters.sip]", "[adapters.Sip]");
    assert_contains(
        &error(&text),
        &[
            "adapters.Sip: adapter name `Sip` is not allowed",
            "lowercase letters",
        ],
    );
}

#[test]
fn rule_app_names_are_valid_and_unique() {
    let text = base_with("name = \"demo\"", "name = \"Demo App\"");
    assert_contains(
        &error(&text),
        &["apps[0].name: app name `Demo App` is not allowed"],
    );
    let second = "\n[[adapters.webhook.apps]]\nname = \"demo\"\ndomains = [\"other.localhost\"]\n\
                  token = \"t\"\n";
    let text = format!("{BASE}{second}");
    assert_contains(
        &error(&text),
        &["apps[1].name: app name `demo` is used twice in adapter `webhook` (first in apps[0])"],
    );
}

#[test]
fn rule_secrets_must_not_be_empty() {
    let text = base_with("${SECRET:-component-secret}", "${SECRET:-}");
    assert_contains(
        &error(&text),
        &["components[0].secret: component `gw.xmpp.localhost` has an empty secret"],
    );
    let text = base_with("${TOKEN:-app-token-0123456789}", "");
    assert_contains(
        &error(&text),
        &["apps[0].token: webhook app `demo` has an empty token"],
    );
}

#[test]
fn rule_webhook_url_must_be_http() {
    let text = base_with(
        "token = \"${TOKEN:-app-token-0123456789}\"",
        "token = \"t\"\nurl = \"ftp://x\"",
    );
    assert_contains(
        &error(&text),
        &["apps[0].url: url `ftp://x` of webhook app `demo` is not an http(s) URL"],
    );
}

#[test]
fn rule_outbound_proxy_must_be_a_sip_uri() {
    let text = base_with(
        "type = \"sip\"",
        "type = \"sip\"\noutbound_proxy = \"127.0.0.1:5070\"",
    );
    assert_contains(
        &error(&text),
        &["adapters.sip.outbound_proxy: outbound_proxy `127.0.0.1:5070` is not a SIP URI"],
    );
    let text = base_with(
        "type = \"sip\"",
        "type = \"sip\"\noutbound_proxy = \"sip:127.0.0.1:5070;transport=udp\"",
    );
    assert!(parse(&text).is_ok());
}

#[test]
fn sse_retention_is_configurable_within_its_range() {
    let text = base_with(
        "listen = \"127.0.0.1:8080\"\n",
        "listen = \"127.0.0.1:8080\"\nsse_retention = 500\n",
    );
    let config = parse(&text).expect("valid");
    let Some(AdapterConfig::Webhook(webhook)) = config.adapters.get("webhook") else {
        panic!("webhook adapter");
    };
    assert_eq!(webhook.sse_retention, 500);
    let text = base_with(
        "listen = \"127.0.0.1:8080\"\n",
        "listen = \"127.0.0.1:8080\"\nsse_retention = 5\n",
    );
    assert_contains(
        &error(&text),
        &["sse_retention = 5 is out of range; use 10 to 10000000 events"],
    );
    let Some(AdapterConfig::Webhook(webhook)) =
        parse(BASE).expect("valid").adapters.get("webhook").cloned()
    else {
        panic!("webhook adapter");
    };
    assert_eq!(webhook.sse_retention, 10_000, "the default");
}

#[test]
fn rule_numbers_must_be_in_range() {
    let text = format!("[gateway]\nmax_hops = 0\n{BASE}");
    assert_contains(
        &error(&text),
        &["gateway.toml:2:12: gateway.max_hops: max_hops = 0 is out of range; use 1 to 255"],
    );
    let text = format!("[gateway]\nmax_hops = 256\n{BASE}");
    assert_contains(&error(&text), &["max_hops = 256 is out of range"]);
    let text = format!("[gateway]\nmax_delivery_attempts = 0\n{BASE}");
    assert_contains(
        &error(&text),
        &["max_delivery_attempts = 0 is out of range"],
    );
    let text = format!("[gateway]\nmax_subscriptions = 0\n{BASE}");
    assert_contains(&error(&text), &["max_subscriptions = 0 is out of range"]);
    let text = format!("[gateway]\nmax_subscriptions = 250000\n{BASE}");
    assert_eq!(
        cpim_gateway::serve::core_config(&parse(&text).expect("valid"))
            .hub
            .max_subscriptions,
        250_000
    );
    let text = format!("[gateway]\nmax_delivery_attempts = 7\n{BASE}");
    assert_eq!(
        parse(&text).expect("valid").gateway.max_delivery_attempts,
        7
    );
    assert_eq!(
        cpim_gateway::serve::core_config(&parse(&text).expect("valid")).max_delivery_attempts,
        7
    );
    let text = base_with(
        "type = \"sip\"",
        "type = \"sip\"\nunregistered_users = \"drop\"",
    );
    assert_contains(&error(&text), &["unregistered_users", "store", "refuse"]);
    let text = base_with("type = \"sip\"", "type = \"sip\"\nmax_udp_message = 100");
    assert_contains(
        &error(&text),
        &["adapters.sip.max_udp_message: max_udp_message = 100"],
    );
    let text = base_with("type = \"xmpp\"", "type = \"xmpp\"\nping_interval_secs = 0");
    assert_contains(
        &error(&text),
        &["adapters.xmpp.ping_interval_secs: ping_interval_secs = 0"],
    );
}

#[test]
fn rule_xmpp_server_is_host_and_port() {
    let text = base_with("\"127.0.0.1:5347\"", "\"127.0.0.1\"");
    assert_contains(
        &error(&text),
        &["adapters.xmpp.server: `127.0.0.1` is not host:port"],
    );
}

#[test]
fn every_broken_rule_is_reported_at_once() {
    let text = base_with("[\"xmpp.localhost\"]", "[\"sip.localhost\"]").replacen(
        "transport = \"tcp\"",
        "transport = \"tls\"",
        1,
    );
    let error = parse(&text).expect_err("invalid");
    assert_eq!(error.problems().len(), 3, "{error}");
    assert!(error
        .problems()
        .iter()
        .all(|problem| problem.location.is_some()));
}

#[test]
fn unreadable_file_names_the_path() {
    let error = Config::load(Path::new("/nonexistent/cpim/gateway.toml")).expect_err("missing");
    assert!(matches!(error, ConfigError::Read { .. }));
    assert!(error
        .to_string()
        .starts_with("/nonexistent/cpim/gateway.toml: cannot read"));
}

// ----- routing: [[aliases]] and [[users]]

/// `BASE` with a second XMPP component `sip.gw.xmpp.localhost` and `extra` appended.
fn routing(extra: &str) -> String {
    let with_component = base_with(
        "[adapters.webhook]",
        "[[adapters.xmpp.components]]\ndomain = \"sip.gw.xmpp.localhost\"\nsecret = \"s\"\n\n\
         [adapters.webhook]",
    );
    format!("{with_component}\n{extra}")
}

const SIP_ON_XMPP: &str =
    "[[aliases]]\ndomain = \"sip.localhost\"\non = \"xmpp\"\nas = \"sip.gw.xmpp.localhost\"\n";

#[test]
fn sample_routes_sip_users_through_an_alias_and_others_through_escaping() {
    let path = workspace_root().join("gateway.toml");
    let config = Config::load_with_env(&path, no_env).expect("the sample is valid");
    let map = config.map_config();
    let xmpp = map
        .adapters
        .iter()
        .find(|adapter| adapter.name == "xmpp")
        .expect("xmpp adapter");
    assert_eq!(
        xmpp.alias_domains,
        [(
            "sip.gw.xmpp.localhost".to_owned(),
            "sip.localhost".to_owned()
        )]
    );
    assert_eq!(xmpp.escape_domains, ["gw.xmpp.localhost"]);
    assert_eq!(xmpp.home_domains, ["xmpp.localhost"]);
    assert!(config.address_map().is_ok());
}

#[test]
fn aliases_and_users_are_read() {
    let text = routing(&format!(
        "{SIP_ON_XMPP}\n[[users]]\nidentity = \"alice@xmpp.localhost\"\non = \"sip\"\n\
         as = \"sip:+15551234567@carrier.example\"\n"
    ));
    let config = parse(&text).expect("valid");
    assert_eq!(config.aliases.len(), 1);
    assert_eq!(config.aliases[0].alias.as_str(), "sip.gw.xmpp.localhost");
    assert_eq!(config.users[0].identity.to_string(), "alice@xmpp.localhost");
    let map = config.address_map().expect("map builds");
    let address = cpim::Address::parse("sip:+15551234567@carrier.example").expect("address");
    let route = map.resolve("sip", &address).expect("routable");
    assert_eq!(route.identity.to_string(), "alice@xmpp.localhost");
    assert_eq!(route.owner, "xmpp");
}

#[test]
fn aliases_and_users_reject_unknown_keys() {
    let text = routing("[[aliases]]\ndomain = \"sip.localhost\"\non = \"xmpp\"\nalias = \"x\"\n");
    assert_contains(
        &error(&text),
        &["unknown field `alias`, expected one of `domain`, `on`, `as`"],
    );
    let text = routing("[[users]]\nidentity = \"a@sip.localhost\"\nadapter = \"xmpp\"\n");
    assert_contains(
        &error(&text),
        &["users[0].adapter: unknown field `adapter`"],
    );
}

#[test]
fn rule_alias_on_unknown_adapter() {
    let text = routing(&SIP_ON_XMPP.replace("on = \"xmpp\"", "on = \"jabber\""));
    let line = line_of(&text, "on = \"jabber\"");
    assert_contains(
        &error(&text),
        &[
            &format!("gateway.toml:{line}:6: aliases[0].on: no adapter is named `jabber`"),
            "hint: set `on` to one of the configured adapters: `sip`, `webhook`, `xmpp`",
        ],
    );
}

#[test]
fn rule_xmpp_alias_must_be_a_component_domain() {
    let text =
        routing(&SIP_ON_XMPP.replace("as = \"sip.gw.xmpp.localhost\"", "as = \"sip.gw.example\""));
    let line = line_of(&text, "as = \"sip.gw.example\"");
    assert_contains(
        &error(&text),
        &[
            &format!(
                "gateway.toml:{line}:6: aliases[0].as: alias domain `sip.gw.example` is not a \
                 component domain of xmpp adapter `xmpp`"
            ),
            "hint: on an xmpp adapter the alias domain must be one of its",
        ],
    );
}

#[test]
fn rule_alias_domain_must_be_a_home_domain() {
    let text =
        routing(&SIP_ON_XMPP.replace("domain = \"sip.localhost\"", "domain = \"nowhere.example\""));
    let line = line_of(&text, "\"nowhere.example\"");
    assert_contains(
        &error(&text),
        &[
            &format!(
                "gateway.toml:{line}:10: aliases[0].domain: alias domain sip.gw.xmpp.localhost on \
                 adapter xmpp stands for nowhere.example, which is not a home domain of any adapter"
            ),
            "hint: `domain` must be a home domain",
        ],
    );
}

#[test]
fn rule_alias_on_its_own_adapter() {
    let text =
        routing(&SIP_ON_XMPP.replace("domain = \"sip.localhost\"", "domain = \"xmpp.localhost\""));
    assert_contains(
        &error(&text),
        &[
            "aliases[0].on: alias domain sip.gw.xmpp.localhost on adapter xmpp stands for \
             xmpp.localhost, a home domain of the same adapter",
            "hint: an alias shows the users of one adapter on another",
        ],
    );
}

#[test]
fn rule_alias_domain_must_not_be_owned() {
    let text = routing(
        "[[aliases]]\ndomain = \"xmpp.localhost\"\non = \"sip\"\nas = \"gw.xmpp.localhost\"\n",
    );
    let line = line_of(&text, "as = \"gw.xmpp.localhost\"");
    assert_contains(
        &error(&text),
        &[
            &format!(
                "gateway.toml:{line}:6: aliases[0].as: domain gw.xmpp.localhost is the alias \
                 domain of adapter sip but already the escape domain of adapter xmpp"
            ),
            "hint: an alias domain must be used for nothing else",
        ],
    );
}

#[test]
fn rule_user_identity_and_address_syntax() {
    let text = routing("[[users]]\nidentity = \"alice\"\non = \"sip\"\nas = \"sip:a@c.example\"\n");
    let line = line_of(&text, "\"alice\"");
    assert_contains(
        &error(&text),
        &[&format!(
            "gateway.toml:{line}:12: users[0].identity: `alice` is not user@domain"
        )],
    );
    let text = routing(
        "[[users]]\nidentity = \"alice@xmpp.localhost\"\non = \"sip\"\nas = \"sip:a@bad host\"\n",
    );
    let line = line_of(&text, "\"sip:a@bad host\"");
    assert_contains(
        &error(&text),
        &[&format!(
            "gateway.toml:{line}:6: users[0].as: `sip:a@bad host` is not an address"
        )],
    );
}

#[test]
fn rule_user_on_unknown_adapter() {
    let text = routing(
        "[[users]]\nidentity = \"alice@xmpp.localhost\"\non = \"irc\"\nas = \"sip:a@c.example\"\n",
    );
    assert_contains(&error(&text), &["users[0].on: no adapter is named `irc`"]);
}

#[test]
fn rule_user_must_be_at_a_home_domain() {
    let text = routing(
        "[[users]]\nidentity = \"alice@gw.xmpp.localhost\"\non = \"sip\"\n\
         as = \"sip:a@c.example\"\n",
    );
    assert_contains(
        &error(&text),
        &[
            "users[0].identity: user alice@gw.xmpp.localhost is not at a home domain",
            "hint: write the user at their home domain",
        ],
    );
}

#[test]
fn rule_user_address_in_the_adapters_style() {
    let text = routing(
        "[[users]]\nidentity = \"alice@xmpp.localhost\"\non = \"sip\"\n\
         as = \"im:alice@c.example\"\n",
    );
    let line = line_of(&text, "\"im:alice@c.example\"");
    assert_contains(
        &error(&text),
        &[&format!(
            "gateway.toml:{line}:6: users[0].as: address im:alice@c.example of user \
             alice@xmpp.localhost on adapter sip is not written in the adapter's style"
        )],
    );
    let text = routing(
        "[[users]]\nidentity = \"alice@xmpp.localhost\"\non = \"sip\"\n\
         as = \"sip:alice@sip.localhost\"\n",
    );
    assert_contains(
        &error(&text),
        &[
            "users[0].as: address sip:alice@sip.localhost",
            "the home domain of adapter sip",
        ],
    );
}

#[test]
fn rule_user_entries_are_unique_both_ways() {
    let entry = |identity: &str, address: &str| {
        format!("[[users]]\nidentity = \"{identity}\"\non = \"sip\"\nas = \"{address}\"\n\n")
    };
    let text = routing(&format!(
        "{}{}",
        entry("alice@xmpp.localhost", "sip:1@c.example"),
        entry("alice@xmpp.localhost", "sip:2@c.example")
    ));
    assert_contains(
        &error(&text),
        &["users[1]: user alice@xmpp.localhost has two entries on adapter sip"],
    );
    let text = routing(&format!(
        "{}{}",
        entry("alice@xmpp.localhost", "sip:1@c.example"),
        entry("bob@xmpp.localhost", "sip:1@c.example")
    ));
    assert_contains(
        &error(&text),
        &[
            "users[1].as: address sip:1@c.example on adapter sip is given to both \
           alice@xmpp.localhost and bob@xmpp.localhost",
        ],
    );
}

#[test]
fn sip_registrar_accounts_credentials_and_proxy_rules() {
    let sip_end = "  { transport = \"tcp\", address = \"127.0.0.1:5060\" },\n]\n";
    // Valid: a registrar domain of the adapter with an account, credentials, a cpim domain.
    let good = base_with(
        sip_end,
        &format!(
            "{sip_end}registrar_domains = [\"sip.localhost\"]\ncpim_domains = [\"carrier.example\"]\n\
             trusted_proxies = [\"10.0.0.5\", \"::1\"]\n\
             [[adapters.sip.accounts]]\nusername = \"alice\"\npassword = \"pw\"\n\
             [[adapters.sip.credentials]]\nrealm = \"proxy.example\"\nusername = \"gw\"\npassword = \"pw2\"\n"
        ),
    );
    let config = parse(&good).expect("valid");
    let Some(cpim_gateway::config::AdapterConfig::Sip(sip)) = config.adapters.get("sip") else {
        panic!("sip adapter")
    };
    assert_eq!(sip.accounts.len(), 1);
    assert_eq!(sip.credentials.len(), 1);
    assert_eq!(sip.trusted_proxies.len(), 2);
    // Trusted proxies without a registrar (their P-Asserted-Identity counts, RFC 3325),
    // and one that is no IP address.
    parse(&base_with(
        sip_end,
        &format!("{sip_end}trusted_proxies = [\"10.0.0.5\"]\n"),
    ))
    .expect("valid without registrar_domains");
    let err = error(&base_with(
        sip_end,
        &format!("{sip_end}registrar_domains = [\"sip.localhost\"]\ntrusted_proxies = [\"proxy.example\"]\n"),
    ));
    assert_contains(&err, &["trusted_proxies"]);
    // A registrar domain the adapter does not serve.
    let err = error(&base_with(
        sip_end,
        &format!("{sip_end}registrar_domains = [\"other.example\"]\n"),
    ));
    assert_contains(&err, &["registrar domain `other.example`"]);
    // Accounts without a registrar domain.
    let err = error(&base_with(
        sip_end,
        &format!("{sip_end}[[adapters.sip.accounts]]\nusername = \"alice\"\npassword = \"pw\"\n"),
    ));
    assert_contains(&err, &["has `accounts` but no `registrar_domains`"]);
    // Empty passwords.
    let err = error(&base_with(
        sip_end,
        &format!("{sip_end}[[adapters.sip.credentials]]\nusername = \"gw\"\npassword = \"\"\n"),
    ));
    assert_contains(&err, &["empty password"]);
    // An outbound proxy over TLS is allowed (issue 16: the adapter has a TLS client).
    parse(&base_with(
        sip_end,
        &format!("{sip_end}outbound_proxy = \"sips:127.0.0.1:5061\"\n"),
    ))
    .expect("a TLS proxy is valid");
    // A client certificate needs its key.
    let err = error(&base_with(
        sip_end,
        &format!("{sip_end}[adapters.sip.tls]\ncertificate = \"gw.pem\"\n"),
    ));
    assert_contains(&err, &["has a `certificate` without a `private_key`"]);
}

#[test]
fn sip_presence_authorization_and_allow_list() {
    use cpim_gateway::config::PresenceAuthorization;
    let sip_end = "  { transport = \"tcp\", address = \"127.0.0.1:5060\" },\n]\n";
    let sip_of = |text: &str| {
        let config = parse(text).expect("valid");
        let Some(cpim_gateway::config::AdapterConfig::Sip(sip)) = config.adapters.get("sip") else {
            panic!("sip adapter")
        };
        sip.clone()
    };
    // The default is not open.
    let sip = sip_of(&base_with(sip_end, sip_end));
    assert_eq!(sip.presence_authorization, PresenceAuthorization::Contacts);
    assert!(sip.presence_allow.is_empty());
    for (value, want) in [
        ("open", PresenceAuthorization::Open),
        ("contacts", PresenceAuthorization::Contacts),
        ("allow_list", PresenceAuthorization::AllowList),
    ] {
        let sip = sip_of(&base_with(
            sip_end,
            &format!(
                "{sip_end}presence_authorization = \"{value}\"\n\
                 presence_allow = [\"boss@xmpp.example\", \"*@corp.example\"]\n"
            ),
        ));
        assert_eq!(sip.presence_authorization, want);
        assert_eq!(sip.presence_allow.len(), 2);
    }
    for bad in ["everyone", "Open"] {
        let err = error(&base_with(
            sip_end,
            &format!("{sip_end}presence_authorization = \"{bad}\"\n"),
        ));
        assert_contains(&err, &["presence_authorization"]);
    }
    for bad in [
        "boss",
        "*@*.example",
        "b*ss@x.example",
        "sip:boss@x.example",
        "@x.example",
    ] {
        let err = error(&base_with(
            sip_end,
            &format!("{sip_end}presence_allow = [\"{bad}\"]\n"),
        ));
        assert_contains(&err, &["presence_allow"]);
    }
}

/// Issue 14: `check` refuses what `run` refuses: a webhook token shorter than 16
/// characters, and two apps with one token (the token says which app is calling).
#[test]
fn rule_webhook_tokens_are_long_and_distinct() {
    let text = base_with("${TOKEN:-app-token-0123456789}", "short-token");
    assert_contains(
        &error(&text),
        &["apps[0].token: the token of webhook app `demo` has 11 characters; at least 16 are needed"],
    );
    let second = "\n[[adapters.webhook.apps]]\nname = \"other\"\ndomains = [\"other.localhost\"]\n\
                  token = \"app-token-0123456789\"\n";
    let text = format!("{BASE}{second}");
    assert_contains(
        &error(&text),
        &["apps[1].token: webhook app `other` has the same token as apps[0]"],
    );
}

/// Issue 16: `remote_domains` of a SIP adapter are users of SIP (routable to it), found
/// by RFC 3263 through `[adapters.NAME.dns] nameservers`; a domain cannot be both served
/// and remote, nor another adapter's, and a name server is an IP address.
#[tokio::test]
async fn remote_domains_are_sip_users_found_through_the_configured_nameservers() {
    let with = |remote: &str, dns: &str| {
        base_with(
            "domains = [\"sip.localhost\"]\n",
            &format!("domains = [\"sip.localhost\"]\nremote_domains = [{remote}]\ndns = {{ nameservers = [{dns}] }}\n"),
        )
    };
    let config =
        parse(&with("\"carrier.example\"", "\"127.0.0.1:15353\", \"::1\"")).expect("valid");
    let Some(AdapterConfig::Sip(sip)) = config.adapters.get("sip") else {
        panic!("sip adapter");
    };
    let runtime = sip.runtime("sip", Path::new(".")).await.expect("runtime");
    assert_eq!(runtime.remote.listed, ["carrier.example"]);
    assert!(!runtime.remote.any);
    assert_eq!(
        runtime.nameservers,
        [
            "127.0.0.1:15353"
                .parse::<std::net::SocketAddr>()
                .expect("address"),
            "[::1]:53".parse().expect("address")
        ]
    );
    let map = config.address_map().expect("map builds");
    let address = cpim::Address::parse("sip:bob@carrier.example").expect("address");
    assert_eq!(map.resolve("sip", &address).expect("routable").owner, "sip");
    assert_contains(
        &error(&with("\"sip.localhost\"", "")),
        &["is in both `domains` and `remote_domains`"],
    );
    assert_contains(&error(&with("\"xmpp.localhost\"", "")), &["xmpp.localhost"]);
    assert_contains(
        &error(&with("\"carrier.example\"", "\"dns.example:53\"")),
        &["`dns.example:53` is not a name server address"],
    );
    assert_contains(
        &error(&with(
            "\"carrier.example\"",
            "\"127.0.0.1\" ], retries = [ 1",
        )),
        &["unknown field `retries`"],
    );
    let peers = |table: &str| {
        base_with(
            "domains = [\"sip.localhost\"]\n",
            &format!("domains = [\"sip.localhost\"]\nremote_domains = [\"carrier.example\"]\ntrusted_peers = {table}\n"),
        )
    };
    let config = parse(&peers(
        "{ \"carrier.example\" = [\"192.0.2.0/24\", \"2001:db8::1\"] }",
    ))
    .expect("valid");
    let Some(AdapterConfig::Sip(sip)) = config.adapters.get("sip") else {
        panic!("sip adapter");
    };
    let runtime = sip.runtime("sip", Path::new(".")).await.expect("runtime");
    assert_eq!(runtime.trusted_peers.len(), 1);
    assert_eq!(runtime.trusted_peers[0].0, "carrier.example");
    assert_eq!(
        runtime.trusted_peers[0]
            .1
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["192.0.2.0/24", "2001:db8::1/128"]
    );
    assert_contains(
        &error(&peers("{ \"other.example\" = [\"192.0.2.1\"] }")),
        &["names `other.example`, which is none of its `domains` or `remote_domains`"],
    );
    assert_contains(
        &error(&peers("{ \"carrier.example\" = [\"192.0.2.0/40\"] }")),
        &["`192.0.2.0/40` is not an IP address or network"],
    );
    let tls_only = |list: &str| {
        base_with(
            "domains = [\"sip.localhost\"]\n",
            &format!("domains = [\"sip.localhost\"]\nremote_domains = [\"carrier.example\"]\nrequire_tls = [{list}]\n"),
        )
    };
    let config = parse(&tls_only("\"carrier.example\"")).expect("valid");
    let Some(AdapterConfig::Sip(sip)) = config.adapters.get("sip") else {
        panic!("sip adapter");
    };
    let runtime = sip.runtime("sip", Path::new(".")).await.expect("runtime");
    assert_eq!(runtime.require_tls, ["carrier.example"]);
    assert_contains(
        &error(&tls_only("\"other.example\"")),
        &["`require_tls` of sip adapter `sip` names `other.example`, which is not one of its `remote_domains`"],
    );
}

/// Issue 16: `remote_domains = ["*"]` makes every domain no adapter claims a SIP
/// domain (an app or an XMPP user can write to any SIP address), while the domains the
/// adapters list keep their owners; `denied_domains` are neither reached nor accepted.
#[tokio::test]
async fn a_star_in_remote_domains_reaches_every_domain_no_adapter_claims() {
    let with = |extra: &str| {
        base_with(
            "domains = [\"sip.localhost\"]\n",
            &format!("domains = [\"sip.localhost\"]\n{extra}\n"),
        )
    };
    let config = parse(&with(
        "remote_domains = [\"*\", \"carrier.example\"]\ndenied_domains = [\"spam.example\"]",
    ))
    .expect("valid");
    let Some(AdapterConfig::Sip(sip)) = config.adapters.get("sip") else {
        panic!("sip adapter");
    };
    let runtime = sip.runtime("sip", Path::new(".")).await.expect("runtime");
    assert!(runtime.remote.any);
    assert_eq!(runtime.remote.listed, ["carrier.example"]);
    assert_eq!(runtime.remote.denied, ["spam.example"]);
    let map = config.address_map().expect("map builds");
    let address = |text: &str| cpim::Address::parse(text).expect("address");
    // Written by the app or on XMPP (escaped at the component domain): a SIP user.
    for (on, written) in [
        ("webhook", "im:bob@anywhere.example"),
        ("sip", "sip:bob@anywhere.example"),
        ("xmpp", "bob\\40anywhere.example@gw.xmpp.localhost"),
    ] {
        let route = map.resolve(on, &address(written)).expect("routable");
        assert_eq!(route.owner, "sip", "{written}");
        assert_eq!(route.identity.to_string(), "bob@anywhere.example");
    }
    // Listed domains keep their adapters.
    let xmpp_user = map
        .resolve("sip", &address("sip:alice@xmpp.localhost"))
        .expect("routable");
    assert_eq!(xmpp_user.owner, "xmpp");
    let bob = cpim_broker::Identity::new("bob", "anywhere.example");
    assert_eq!(
        map.present(&bob, None, "xmpp")
            .expect("written")
            .to_string(),
        "bob\\40anywhere.example@gw.xmpp.localhost"
    );
    // Without the star an unknown domain is no route.
    let listed = parse(&with("remote_domains = [\"carrier.example\"]")).expect("valid");
    assert!(listed
        .address_map()
        .expect("map")
        .resolve("webhook", &address("im:bob@anywhere.example"))
        .is_err());
    assert_contains(
        &error(&with(
            "remote_domains = [\"carrier.example\"]\ndenied_domains = [\"carrier.example\"]",
        )),
        &["is denied and also listed in `domains` or `remote_domains`"],
    );
    assert_contains(
        &error(&with("remote_domains = [\"*.example\"]")),
        &["or \"*\" for every domain no adapter claims"],
    );
}
