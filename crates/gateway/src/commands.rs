//! The `check` and `run` commands.

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use crate::config::{AdapterConfig, AdapterKind, Config};
use crate::error::Error;

/// Whether this version contains the adapter for `kind`. The one place to change when an
/// adapter is built.
pub fn adapter_built(kind: AdapterKind) -> bool {
    match kind {
        AdapterKind::Sip => false,
        AdapterKind::Xmpp => false,
        AdapterKind::Webhook => false,
    }
}

/// `check`: loads and validates the configuration at `path` and writes its summary to `out`.
pub fn check(path: &Path, out: &mut impl Write) -> Result<(), Error> {
    let config = Config::load(path)?;
    out.write_all(summary(&config).as_bytes())
        .and_then(|()| out.flush())
        .map_err(Error::Output)
}

/// `run`: loads and validates the configuration at `path`, then refuses to run, because this
/// version builds no adapters: each configured adapter is logged as missing and the error says
/// which.
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
    Err(Error::BrokerNotBuilt)
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
        match adapter {
            AdapterConfig::Sip(sip) => {
                let listen = sip
                    .listen
                    .iter()
                    .map(|listener| format!("{}:{}", listener.transport, listener.address))
                    .collect::<Vec<_>>()
                    .join(",");
                let _ = write!(text, "  listen={listen}");
                if let Some(proxy) = &sip.outbound_proxy {
                    let _ = write!(text, "  outbound_proxy={proxy}");
                }
            }
            AdapterConfig::Xmpp(xmpp) => {
                let components = xmpp
                    .components
                    .iter()
                    .map(|component| component.domain.as_str())
                    .collect::<Vec<_>>()
                    .join(",");
                let _ = write!(
                    text,
                    "  server={}  components={components}  message_type={}",
                    xmpp.server,
                    xmpp.message_type.as_str()
                );
            }
            AdapterConfig::Webhook(webhook) => {
                let apps = webhook
                    .apps
                    .iter()
                    .map(|app| app.name.as_str())
                    .collect::<Vec<_>>()
                    .join(",");
                let _ = write!(text, "  listen=http:{}  apps={apps}", webhook.listen);
            }
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_adapter_is_built_in_this_version() {
        for kind in [AdapterKind::Sip, AdapterKind::Xmpp, AdapterKind::Webhook] {
            assert!(!adapter_built(kind), "{kind} is not built yet");
        }
    }
}
