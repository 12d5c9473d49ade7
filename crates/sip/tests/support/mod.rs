//! Test support: a broker with the SIP adapter on loopback and an in-memory far side.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cpim_broker::core::CoreConfig;
use cpim_broker::identity::AddressStyle;
use cpim_broker::map::{AdapterMapConfig, AddressMap, MapConfig};
use cpim_broker::presence::HubConfig;
use cpim_broker::runtime::{Broker, BrokerHandle, Submitter};
use cpim_broker::testing::MemoryAdapter;
use cpim_sip::transport::Transport;
use cpim_sip::{SipAdapter, SipConfig};

#[allow(unused_imports)] // not every test binary picks ports
pub use cpim_test_support::net::free_port;

/// The SIP side's home domain.
pub const SIP_DOMAIN: &str = "sip.test";
/// The in-memory network's home domain.
pub const MEM_DOMAIN: &str = "mem.test";

/// One running gateway.
pub struct Gateway {
    pub sip: Arc<SipAdapter>,
    pub mem: MemoryAdapter,
    pub from_mem: Submitter,
    pub broker: BrokerHandle,
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.broker.stop();
    }
}

/// The map: SIP at `sip.test` and `extra_sip_domains`, where `"*"` makes SIP the
/// adapter of every domain no adapter claims; the in-memory adapter at `mem.test`.
fn map(extra_sip_domains: &[&str]) -> AddressMap {
    let mut home = vec![SIP_DOMAIN.to_owned()];
    let any = extra_sip_domains.contains(&"*");
    home.extend(
        extra_sip_domains
            .iter()
            .filter(|d| **d != "*")
            .map(|d| (*d).to_owned()),
    );
    AddressMap::new(MapConfig {
        adapters: vec![
            AdapterMapConfig {
                name: "sip".into(),
                style: AddressStyle::Sip,
                home_domains: home,
                alias_domains: Vec::new(),
                escape_domains: Vec::new(),
            },
            AdapterMapConfig {
                name: "mem".into(),
                style: AddressStyle::Sip,
                home_domains: vec![MEM_DOMAIN.into()],
                alias_domains: Vec::new(),
                escape_domains: Vec::new(),
            },
        ],
        users: Vec::new(),
        any_domain: any.then(|| "sip".to_owned()),
    })
    .expect("valid map")
}

/// Starts a broker, the SIP adapter on 127.0.0.1 (UDP and TCP on one free port) with
/// `configure` applied to its settings, and an in-memory adapter for `mem.test`.
pub async fn gateway(
    extra_sip_domains: &[&str],
    configure: impl FnOnce(&mut SipConfig),
) -> Gateway {
    gateway_with_core(extra_sip_domains, |_| {}, configure).await
}

/// [`gateway`] with the broker's settings changed by `core_config`.
pub async fn gateway_with_core(
    extra_sip_domains: &[&str],
    core_config: impl FnOnce(&mut CoreConfig),
    configure: impl FnOnce(&mut SipConfig),
) -> Gateway {
    let mut core = CoreConfig {
        hub: HubConfig {
            coalesce_interval: Duration::from_millis(100),
            ..HubConfig::default()
        },
        ..CoreConfig::default()
    };
    core_config(&mut core);
    build(extra_sip_domains, core, configure, None).await
}

/// [`gateway`] whose broker has not started: up to `submit_queue` submissions wait in
/// its queue until the test calls `Broker::start` on the broker returned.
pub async fn gateway_paused(submit_queue: usize) -> (Gateway, Broker) {
    let core = CoreConfig {
        submit_queue,
        ..CoreConfig::default()
    };
    let (gateway, broker) = build_with(&[], core, |_| {}, None).await;
    (gateway, broker.expect("not started"))
}

/// A gateway whose broker keeps its spool in the file `spool` (a restart on the same
/// file sees what the last one kept).
pub async fn gateway_on_spool(spool: &std::path::Path) -> Gateway {
    let core = CoreConfig {
        hub: HubConfig {
            coalesce_interval: Duration::from_millis(100),
            ..HubConfig::default()
        },
        ..CoreConfig::default()
    };
    let spool = cpim_broker::spool::FileSpool::open(spool).expect("the spool opens");
    build(&[], core, |_| {}, Some(Box::new(spool))).await
}

async fn build(
    extra_sip_domains: &[&str],
    core: CoreConfig,
    configure: impl FnOnce(&mut SipConfig),
    spool: Option<Box<dyn cpim_broker::spool::Spool>>,
) -> Gateway {
    let (gateway, mut broker) = build_with(extra_sip_domains, core, configure, spool).await;
    if let Some(broker) = broker.take() {
        broker.start();
    }
    gateway
}

/// The gateway and its broker, not started yet.
async fn build_with(
    extra_sip_domains: &[&str],
    core: CoreConfig,
    configure: impl FnOnce(&mut SipConfig),
    spool: Option<Box<dyn cpim_broker::spool::Spool>>,
) -> (Gateway, Option<Broker>) {
    let (mut broker, handle) = Broker::new(core, Arc::new(map(extra_sip_domains)));
    if let Some(spool) = spool {
        broker = broker.with_spool(spool).expect("the spool is read");
    }
    let port = free_port();
    let mut domains = vec![SIP_DOMAIN];
    domains.extend_from_slice(extra_sip_domains);
    let mut config = SipConfig::new("sip", &domains, SocketAddr::from(([127, 0, 0, 1], port)));
    config.tick = Duration::from_millis(200);
    configure(&mut config);
    let (sip, bound) = SipAdapter::start(config, broker.context("sip"))
        .await
        .expect("SIP adapter starts");
    let mem = MemoryAdapter::new("mem", AddressStyle::Sip, &[MEM_DOMAIN]);
    let from_mem = broker.context("mem").submitter;
    broker.add_adapter(sip.clone());
    broker.add_adapter(Arc::new(mem.clone()));
    let find = |t: Transport| {
        bound
            .iter()
            .find(|(x, _)| *x == t)
            .map(|(_, a)| *a)
            .unwrap()
    };
    let gateway = Gateway {
        udp: find(Transport::Udp),
        tcp: find(Transport::Tcp),
        sip,
        mem,
        from_mem,
        broker: handle,
    };
    (gateway, Some(broker))
}

/// Reads one SIP message framed by Content-Length from a stream buffer; `None` when
/// incomplete.
pub fn take_message(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let len = head
        .split("\r\n")
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            let n = n.trim();
            (n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("l"))
                .then(|| v.trim().parse::<usize>().ok())
                .flatten()
        })
        .unwrap_or(0);
    if buf.len() < end + 4 + len {
        return None;
    }
    Some(buf.drain(..end + 4 + len).collect())
}

/// The status code of a response.
pub fn status_of(msg: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(msg);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The first header `name` of a message.
pub fn header_of(msg: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(msg).to_string();
    let head = text.split("\r\n\r\n").next()?.to_owned();
    head.split("\r\n").skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// A response to `request`: its Via, From, To (with `to_tag` if it has none), Call-ID and
/// CSeq, then `extra` headers.
pub fn reply(request: &[u8], status: u16, to_tag: &str, extra: &[(&str, String)]) -> String {
    let text = String::from_utf8_lossy(request).to_string();
    let head = text.split("\r\n\r\n").next().unwrap_or_default().to_owned();
    let mut out = format!("SIP/2.0 {status} Whatever\r\n");
    for line in head.split("\r\n").skip(1) {
        let name = line
            .split(':')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if name == "to" && !line.contains("tag=") && !to_tag.is_empty() {
            out.push_str(&format!("{line};tag={to_tag}\r\n"));
        } else if ["via", "from", "to", "call-id", "cseq"].contains(&name.as_str()) {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    for (name, value) in extra {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

/// The condition of a failure notification, `None` for any other event.
pub fn failure_of(
    envelope: &cpim_broker::envelope::Envelope,
) -> Option<cpim::condition::Condition> {
    match &envelope.event {
        cpim::event::Event::Notification(cpim::event::Notification {
            status: cpim::event::NotificationStatus::Failed { condition, .. },
            ..
        }) => Some(*condition),
        _ => None,
    }
}
