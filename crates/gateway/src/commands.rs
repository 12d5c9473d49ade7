//! The `check`, `run` and `explain` commands.

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use cpim::Address;
use cpim_broker::map::{AddressMap, MapError};
use cpim_broker::{Adapter, Broker, Identity};

use crate::config::{AdapterKind, Config};
use crate::error::Error;
use crate::serve;

/// Whether this version contains the adapter for `kind`. The one place to change when an
/// adapter is built.
pub fn adapter_built(kind: AdapterKind) -> bool {
    match kind {
        AdapterKind::Sip => true,
        AdapterKind::Xmpp => true,
        AdapterKind::Webhook => true,
    }
}

/// `check`: loads and validates the configuration at `path` and writes its summary to `out`.
pub fn check(path: &Path, out: &mut impl Write) -> Result<(), Error> {
    let config = Config::load(path)?;
    out.write_all(summary(&config).as_bytes())
        .and_then(|()| out.flush())
        .map_err(Error::Output)
}

/// `run`: loads and validates the configuration at `path`, starts the broker and every
/// configured adapter, reloads the address map on SIGHUP and stops on SIGTERM/SIGINT.
/// (An adapter kind that is not built would be logged and refused with exit status 3;
/// every kind is built in this version.)
/// Raises the soft limit of open files to the hard one: every connection is a file, and
/// the usual soft default (1 024) is reached by a few hundred idle peers. Logged; a
/// failure is a warning, not a reason not to run.
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open files limit"),
        Err(error) => tracing::warn!(%error, "the open files limit could not be raised"),
    }
}

pub fn run(path: &Path) -> Result<(), Error> {
    let config = Config::load(path)?;
    tracing::info!(config = %path.display(), adapters = config.adapters.len(), "configuration loaded");
    let missing: Vec<(String, AdapterKind)> = config
        .adapters
        .iter()
        .map(|(name, adapter)| (name.clone(), adapter.kind()))
        .filter(|(_, kind)| !adapter_built(*kind))
        .collect();
    for (name, kind) in &missing {
        tracing::error!(adapter = %name, "type" = %kind, "adapter is not built yet in this version");
    }
    if !missing.is_empty() {
        return Err(Error::AdaptersNotBuilt { adapters: missing });
    }
    raise_open_files_limit();
    let runtime = tokio::runtime::Runtime::new().map_err(Error::Runtime)?;
    runtime.block_on(async {
        let broker = serve::prepare(&config)?;
        let adapters = build_adapters(&config, &broker).await?;
        let running = serve::launch(broker, adapters);
        let (reloads, _status) = tokio::sync::watch::channel(serve::ReloadStatus::default());
        let _reloader =
            serve::reload_on_sighup_into(path.to_owned(), running.broker.clone(), reloads.clone())
                .map_err(Error::Runtime)?;
        let (stop_admin, admin_shutdown) = tokio::sync::watch::channel(false);
        let admin = match &config.admin {
            Some(admin) => {
                let state = crate::admin::AdminState {
                    broker: running.broker.clone(),
                    adapters: config.adapters.keys().cloned().collect(),
                    config: path.to_owned(),
                    reloads,
                    reloading: Arc::new(tokio::sync::Mutex::new(())),
                };
                let (_bound, task) = crate::admin::start(admin.listen, state, admin_shutdown)
                    .await
                    .map_err(Error::Runtime)?;
                Some(task)
            }
            None => None,
        };
        let mut running = running;
        tokio::select! {
            stopped = serve::stop_signal() => stopped.map_err(Error::Runtime)?,
            () = running.ended() => return Err(Error::Stopped),
        }
        // Stop accepting, let deliveries in flight finish (the broker's drain deadline),
        // then stop the admin listener last so that readiness can be watched to the end.
        running.stop().await;
        let _ = stop_admin.send(true);
        if let Some(task) = admin {
            let _ = task.await;
        }
        tracing::info!("stopped");
        Ok(())
    })
}

/// Builds the configured adapters, each with its context from the broker. Every adapter
/// kind for which [`adapter_built`] is true has its constructor here; `run` refuses to
/// start before reaching this point while any configured kind is missing.
async fn build_adapters(config: &Config, broker: &Broker) -> Result<Vec<Arc<dyn Adapter>>, Error> {
    let mut adapters: Vec<Arc<dyn Adapter>> = Vec::new();
    let base_dir = config
        .source()
        .parent()
        .unwrap_or(Path::new(""))
        .to_path_buf();
    for (name, adapter) in &config.adapters {
        let adapter = adapter
            .settings()
            .build(name, broker.context(name), &base_dir)
            .await
            .map_err(Error::Runtime)?;
        adapters.push(adapter);
    }
    Ok(adapters)
}

/// `explain`: loads the configuration at `path` and writes to `out` how the gateway reads
/// `address`: the adapter that owns it, the user it names and how that user is written on every
/// adapter. An address that no adapter can route is explained too, and then reported as
/// [`Error::Unroutable`].
pub fn explain(path: &Path, address: &str, out: &mut impl Write) -> Result<(), Error> {
    let config = Config::load(path)?;
    let map = config.address_map()?;
    let parsed = Address::parse(address.trim()).map_err(|source| Error::BadAddress {
        text: address.to_owned(),
        source,
    })?;
    let explanation = map.explain(&parsed);
    let mut text = explanation.to_string();
    text.push_str(&federation(&config, &parsed));
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(Error::Output)?;
    if explanation.is_routable() {
        return Ok(());
    }
    let reason = explanation
        .readings
        .iter()
        .map(|reading| match &reading.result {
            Err(MapError::NoRoute { reason, .. }) => {
                format!("on adapter {}: {reason}", reading.adapter)
            }
            Err(error) => format!("on adapter {}: {error}", reading.adapter),
            Ok(_) => String::new(),
        })
        .collect::<Vec<_>>()
        .join("; ");
    Err(Error::Unroutable {
        address: parsed.to_string(),
        reason,
    })
}

/// For an address at one of a SIP adapter's `remote_domains`: who may speak for the
/// domain, and where RFC 3263 finds its servers now (a live DNS lookup, through the
/// adapter's `[dns] nameservers`). Empty for other addresses.
fn federation(config: &Config, address: &Address) -> String {
    let Ok(Some((_, domain))) = address.identity() else {
        return String::new();
    };
    let mut text = String::new();
    let claimed = config
        .address_map()
        .is_ok_and(|map| map.claims_domain(&domain));
    for (name, adapter) in &config.adapters {
        let crate::config::AdapterConfig::Sip(sip) = adapter else {
            continue;
        };
        let listed = |list: &[cpim_broker::config::Domain]| {
            list.iter()
                .any(|d| d.as_str().eq_ignore_ascii_case(&domain))
        };
        if listed(&sip.denied_domains) {
            let _ = writeln!(
                text,
                "  federation on adapter {name}: {domain} is denied (denied_domains): never reached, its users refused with 403"
            );
            continue;
        }
        let wildcard = sip.remote_domains.any && !claimed;
        if !listed(&sip.remote_domains.listed) && !wildcard {
            continue;
        }
        let require_tls = sip
            .require_tls
            .iter()
            .any(|d| d.as_str().eq_ignore_ascii_case(&domain));
        let _ = writeln!(
            text,
            "  federation on adapter {name}: {domain} is a remote SIP domain (RFC 3263){}",
            if wildcard {
                ", as every domain no adapter claims (\"*\")"
            } else {
                ""
            }
        );
        if require_tls {
            let _ = writeln!(text, "    trusted senders: TLS peers whose certificate names {domain} only (require_tls)");
        } else {
            let peers: Vec<String> = sip
                .trusted_peers
                .iter()
                .filter(|(d, _)| d.eq_ignore_ascii_case(&domain))
                .flat_map(|(_, networks)| networks.iter().map(ToString::to_string))
                .collect();
            let _ = writeln!(
                text,
                "    trusted senders: TLS peers whose certificate names {domain}, its SIP servers in DNS{}{}",
                if peers.is_empty() { String::new() } else { format!(", {}", peers.join(", ")) },
                if sip.trusted_proxies.is_empty() && sip.outbound_proxy.is_none() { "" } else { ", the gateway's proxies" }
            );
        }
        if let Some(proxy) = &sip.outbound_proxy {
            let _ = writeln!(
                text,
                "    sent through outbound_proxy {proxy} (no DNS lookup)"
            );
            continue;
        }
        let nameservers: Vec<std::net::SocketAddr> =
            sip.dns.nameservers.iter().map(|n| n.0).collect();
        let Ok(uri) = cpim::address::SipUri::parse(&format!("sip:{domain}")) else {
            continue;
        };
        let wanted = match address {
            Address::Sip(target) => cpim_sip::locate::Wanted::of(target),
            _ => cpim_sip::locate::Wanted::of(&uri),
        };
        let usable: Vec<cpim_sip::transport::Transport> = if require_tls {
            vec![cpim_sip::transport::Transport::Tls]
        } else {
            vec![
                cpim_sip::transport::Transport::Udp,
                cpim_sip::transport::Transport::Tcp,
                cpim_sip::transport::Transport::Tls,
            ]
        };
        let located = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|rt| {
                rt.block_on(async {
                    let locator = cpim_sip::driver::dns::Locator::new(&nameservers, 0)
                        .map_err(|e| e.to_string())?;
                    locator
                        .locate(&wanted, &usable)
                        .await
                        .map_err(|e| e.to_string())
                })
            });
        match located {
            Ok(peers) => {
                let _ = writeln!(text, "    servers, in the order tried:");
                for peer in peers {
                    let _ = writeln!(text, "      {} {}", peer.transport.token(), peer.addr);
                }
            }
            Err(e) => {
                let _ = writeln!(text, "    servers: none found ({e})");
            }
        }
    }
    text
}

/// A human-readable summary of a valid configuration; secrets are never included.
pub fn summary(config: &Config) -> String {
    let mut text = String::new();
    // Writing to a String cannot fail, so the results of `writeln!` are ignored.
    let _ = writeln!(text, "configuration {} is valid", config.source().display());
    let data_dir = config.data_dir();
    if data_dir.as_os_str() == config.gateway.data_dir.as_str() {
        let _ = writeln!(text, "data dir:  {}", data_dir.display());
    } else {
        let _ = writeln!(
            text,
            "data dir:  {} (resolved: {})",
            config.gateway.data_dir,
            data_dir.display()
        );
    }
    let _ = writeln!(text, "max hops:  {}", config.gateway.max_hops);
    if config.gateway.spool {
        let _ = writeln!(
            text,
            "spool:     on ({}), messages expire after {} s",
            config.spool_path().display(),
            config.gateway.message_expiry_secs
        );
    } else {
        let _ = writeln!(
            text,
            "spool:     off (accepted messages are lost if the gateway stops), messages expire after {} s",
            config.gateway.message_expiry_secs
        );
    }
    match &config.admin {
        Some(admin) => {
            let _ = writeln!(text, "admin:     {}", admin.listen);
        }
        None => {
            let _ = writeln!(text, "admin:     disabled");
        }
    }
    let _ = writeln!(text, "adapters:  {}", config.adapters.len());
    let width = config.adapters.keys().map(String::len).max().unwrap_or(0);
    for (name, adapter) in &config.adapters {
        let domains = adapter
            .domains()
            .iter()
            .map(|domain| domain.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let kind = adapter.kind();
        let _ = write!(text, "  {name:width$}  type={kind:<7}  domains={domains}");
        let _ = write!(text, "  {}", adapter.settings().summary());
        text.push('\n');
        for line in adapter.settings().trust() {
            let _ = writeln!(text, "  {:width$}    {line}", "");
        }
    }
    match config.address_map() {
        Ok(map) => routing_summary(&map, &mut text),
        Err(error) => {
            let _ = writeln!(text, "routing:   {error}");
        }
    }
    text
}

/// The routing rules: how the users of every home domain are written on every adapter, shown
/// for a user named `user`, then the explicit user entries.
fn routing_summary(map: &AddressMap, text: &mut String) {
    let aliases: usize = map.adapters().iter().map(|a| a.alias_domains.len()).sum();
    let escapes: usize = map.adapters().iter().map(|a| a.escape_domains.len()).sum();
    let _ = writeln!(
        text,
        "routing:   {aliases} alias domain(s), {escapes} escape domain(s), {} user entr{}; \
         a user `user` of each home domain is written:",
        map.users().len(),
        if map.users().len() == 1 { "y" } else { "ies" }
    );
    let width = map
        .adapters()
        .iter()
        .map(|adapter| adapter.name.len())
        .max()
        .unwrap_or(0);
    for home in map.adapters() {
        for domain in &home.home_domains {
            let _ = writeln!(text, "  users of {domain} (adapter {}):", home.name);
            let identity = Identity::new("user", domain);
            for adapter in map.adapters() {
                let name = &adapter.name;
                match map.present_with_rule(&identity, None, name) {
                    Ok((address, rule)) => {
                        let _ = writeln!(text, "    on {name:width$}  {address}  ({rule})");
                    }
                    Err(error) => {
                        let _ = writeln!(text, "    on {name:width$}  none: {error}");
                    }
                }
            }
        }
    }
    for user in map.users() {
        let _ = writeln!(
            text,
            "  user {} on {}: {}",
            user.identity, user.adapter, user.address
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AdapterConfig;

    #[test]
    fn webhook_limits_come_from_the_configuration() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let config = Config::load_with_env(&root.join("gateway.toml"), |_| None).expect("sample");
        let Some(AdapterConfig::Webhook(w)) = config.adapters.get("webhook") else {
            panic!("the sample has a webhook adapter");
        };
        let mut w = w.clone();
        w.body_limit_bytes = 2048;
        w.rate_per_sec = 7;
        w.burst = 9;
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let (converted, sinks) = runtime
            .block_on(async { w.runtime("webhook") })
            .expect("converted");
        assert_eq!(converted.body_limit, 2048);
        assert_eq!(converted.rate_per_sec, 7.0);
        assert_eq!(converted.burst, 9);
        assert_eq!(converted.apps[0].domains, ["app.localhost"]);
        assert!(
            sinks.contains_key("demo"),
            "the demo app has a URL, so an outbox"
        );
    }

    #[test]
    fn every_adapter_kind_is_built_in_this_version() {
        assert!(adapter_built(AdapterKind::Xmpp));
        assert!(adapter_built(AdapterKind::Webhook));
        assert!(adapter_built(AdapterKind::Sip));
    }
}
