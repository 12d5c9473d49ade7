//! The configuration of each kind of adapter: one struct per `type`.

use std::fmt;

use cpim_broker::config::AdapterSettings;
use serde::Deserialize;

use cpim_broker::config::Domain;
use cpim_sip::SipSettings;
use cpim_webhook::WebhookSettings;
use cpim_xmpp::XmppSettings;

/// The protocol an adapter speaks: the `type` key of an `[adapters.<name>]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdapterKind {
    /// SIP/SIMPLE (RFC 3428 MESSAGE, RFC 3856 presence).
    Sip,
    /// XMPP, as an external component of an XMPP server (XEP-0114).
    Xmpp,
    /// The JSON webhook protocol.
    Webhook,
}

impl AdapterKind {
    /// The name used for this kind in `type = "..."`.
    pub fn as_str(self) -> &'static str {
        match self {
            AdapterKind::Sip => "sip",
            AdapterKind::Xmpp => "xmpp",
            AdapterKind::Webhook => "webhook",
        }
    }
}

impl fmt::Display for AdapterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One `[adapters.<name>]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdapterConfig {
    /// `type = "sip"`.
    /// Boxed: its table is much larger than the others.
    Sip(Box<SipSettings>),
    /// `type = "xmpp"`.
    Xmpp(XmppSettings),
    /// `type = "webhook"`.
    Webhook(WebhookSettings),
}

impl AdapterConfig {
    /// The adapter's protocol.
    pub fn kind(&self) -> AdapterKind {
        match self {
            AdapterConfig::Sip(_) => AdapterKind::Sip,
            AdapterConfig::Xmpp(_) => AdapterKind::Xmpp,
            AdapterConfig::Webhook(_) => AdapterKind::Webhook,
        }
    }

    /// The adapter crate's settings: everything `check`, `run` and the summary need.
    /// The one place that lists the adapter types besides the enum.
    pub fn settings(&self) -> &dyn AdapterSettings {
        match self {
            AdapterConfig::Sip(sip) => sip.as_ref(),
            AdapterConfig::Xmpp(xmpp) => xmpp,
            AdapterConfig::Webhook(webhook) => webhook,
        }
    }

    /// Every domain this adapter owns: messages to users of these domains are routed to it.
    pub fn domains(&self) -> Vec<&Domain> {
        self.settings().domains()
    }
}
