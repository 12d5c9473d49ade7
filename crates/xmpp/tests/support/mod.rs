//! The XMPP adapter's test support: the shared peers of `cpim-test-support` and the
//! address map these tests run the broker with.

#![allow(dead_code, unused_imports)] // each test binary uses a different part

pub(crate) use cpim_test_support::xmpp::*;

/// The address map of a gateway between this XMPP set-up and SIP users at `sip.test`:
/// XMPP users at `xmpp.test`, SIP users seen under `alias` if given, else escaped under
/// [`COMPONENT`].
pub(crate) fn gateway_map(alias: Option<&str>) -> cpim_broker::AddressMap {
    use cpim_broker::map::{AdapterMapConfig, MapConfig};
    cpim_broker::AddressMap::new(MapConfig {
        adapters: vec![
            AdapterMapConfig {
                name: "xmpp".into(),
                style: cpim_broker::AddressStyle::Xmpp,
                home_domains: vec![DOMAIN.into()],
                alias_domains: alias
                    .map(|a| (a.to_owned(), "sip.test".to_owned()))
                    .into_iter()
                    .collect(),
                escape_domains: vec![COMPONENT.into()],
            },
            AdapterMapConfig {
                name: "sip".into(),
                style: cpim_broker::AddressStyle::Sip,
                home_domains: vec!["sip.test".into()],
                alias_domains: Vec::new(),
                escape_domains: Vec::new(),
            },
        ],
        users: Vec::new(),
        any_domain: None,
    })
    .expect("valid map")
}
