//! Links that share what the server sends: the answer to one link's iq may come on
//! another link's stream, and a server with one listener for several domains (ejabberd's
//! `hosts:` with `global_routes`, its default) makes every connection there a route for
//! all of them, picked at random per stanza, which no receiver can put back in order.
//!
//! So each link's iq ids name their owner ([`crate::confirm::own_id`]) and whichever link
//! receives an answer hands it on. And link 0 probes, for every other link before it
//! connects, whether its own stream already carries that link's domain (an XEP-0199
//! ping from its domain to the other: it comes back on link 0's stream as a request if
//! so; a server that does not route it there answers with an error, or the other link's
//! stream gets it). A domain link 0's stream carries gets no stream of its own: its link
//! *rides*, handing every delivery to link 0's queue, so one stream carries both and the
//! server's order holds. A stanza for such a domain seen on link 0's stream later (a
//! server whose routes changed) makes that link ride too; after each reconnect link 0
//! probes its riders again and sends back those it no longer carries.

use std::collections::VecDeque;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use minidom::Element;
use tokio::sync::{mpsc, oneshot};

use super::{Connection, Link, Outgoing};
use crate::confirm::{own_id, parse_own_id, IdKind, Unconfirmed};

/// Route probes in flight on link 0: id, the link asked about, who waits, when sent.
pub(super) type Probes = Vec<(
    String,
    usize,
    Option<oneshot::Sender<bool>>,
    tokio::time::Instant,
)>;

/// What the links of one adapter share: a server may deliver what concerns one link on
/// another link's stream (ejabberd with one listener for several domains: every
/// connection there is a route for all of them, picked at random per stanza).
pub(super) struct Mesh {
    /// The component domains (lower case), by link index.
    pub(super) domains: Vec<String>,
    /// Each link's outbound queue: a link whose domain rides on link 0's stream hands its
    /// deliveries on to link 0's queue.
    pub(super) queues: Vec<mpsc::Sender<Outgoing>>,
    /// What another link received for each link (answers to its iqs).
    pub(super) routed: Vec<mpsc::UnboundedSender<Routed>>,
    /// Commands to each link.
    pub(super) control: Vec<mpsc::UnboundedSender<Control>>,
}

/// A stanza one link received that is for another (see [`crate::confirm`]).
pub(super) enum Routed {
    /// The answer (result or error) to the owner's iq `id`.
    Answer(String),
    /// The owner's route probe `id` arrived, as a request, on link `on`'s stream.
    Probe { id: String, on: usize },
}

/// Commands between links.
pub(super) enum Control {
    /// Link 0's stream carries this link's domain too: end the own stream and hand every
    /// delivery to link 0 (one stream keeps the server's order).
    Ride,
    /// Link 0's stream no longer carries it: connect an own stream again.
    Alone,
    /// To link 0: is link `link`'s domain delivered on your stream?
    Probe {
        link: usize,
        reply: oneshot::Sender<bool>,
    },
}

/// How long a link waits for link 0's answer to a route probe before it connects on its
/// own (the first time, link 0 may still be connecting).
pub(super) const PROBE_WAIT_FIRST: Duration = Duration::from_secs(5);
pub(super) const PROBE_WAIT: Duration = Duration::from_secs(2);

/// How long a stream that is given up for link 0's is still read.
pub(super) const DRAIN_BEFORE_RIDING: Duration = Duration::from_secs(2);

impl Link {
    /// Asks link 0 whether its stream carries this link's domain (a route probe, see
    /// [`Link::serve`]); `false` when link 0 cannot tell in time.
    pub(super) async fn ask_primary(&self, first: bool) -> bool {
        let (reply, answer) = oneshot::channel();
        let probe = Control::Probe {
            link: self.index,
            reply,
        };
        if self.mesh.control[0].send(probe).is_err() {
            return false;
        }
        let wait = if first { PROBE_WAIT_FIRST } else { PROBE_WAIT };
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            answer = tokio::time::timeout(wait, answer) => matches!(answer, Ok(Ok(true))),
            _ = shutdown.changed() => false,
        }
    }

    /// Hands every delivery on to link 0, whose stream carries this domain, until told
    /// otherwise; what this link's own stream left (unconfirmed, then unwritten) goes
    /// first. `true` when the gateway stops.
    pub(super) async fn ride(
        &mut self,
        outgoing: &mut mpsc::Receiver<Outgoing>,
        resend: &mut VecDeque<Vec<Element>>,
        pending: &mut VecDeque<Outgoing>,
    ) -> bool {
        let host = self.mesh.queues[0].clone();
        let left = resend
            .drain(..)
            .map(|stanzas| Outgoing {
                stanzas,
                written: None,
            })
            .chain(pending.drain(..))
            .collect::<Vec<_>>();
        for item in left {
            if host.send(item).await.is_err() {
                return true;
            }
        }
        let mut shutdown = self.shutdown.clone();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => return true,
                command = self.control.recv() => match command {
                    Some(Control::Alone) => return false,
                    Some(Control::Probe { reply, .. }) => {
                        let _ = reply.send(false);
                    }
                    Some(Control::Ride) => {}
                    None => return true,
                },
                item = outgoing.recv() => match item {
                    Some(item) => {
                        if host.send(item).await.is_err() {
                            return true;
                        }
                    }
                    None => return true,
                },
            }
        }
    }

    pub(super) fn route_to(&self, owner: usize, routed: Routed) {
        if let Some(link) = self.mesh.routed.get(owner) {
            let _ = link.send(routed);
        }
    }

    /// Link 0: a stanza for another link's domain on this stream means the server routes
    /// that domain here too; that link then rides on this stream.
    pub(super) fn notice_other_domain(&mut self, to: Option<&str>) {
        if self.index != 0 {
            return;
        }
        let Some(domain) = to.map(jid_domain) else {
            return;
        };
        let Some(link) = self
            .mesh
            .domains
            .iter()
            .position(|d| d.eq_ignore_ascii_case(domain))
        else {
            return;
        };
        if link != 0 && !self.riders[link] {
            self.riders[link] = true;
            tracing::info!(adapter = %self.adapter, domain = %self.mesh.domains[link], via = %self.domain, "the server delivers another component domain on this stream");
            let _ = self.mesh.control[link].send(Control::Ride);
        }
    }

    /// A route probe came back: as a request on link `on` (`Some`), or as an answer
    /// (`None`: nobody took it as its own).
    pub(super) fn probe_answered(
        &mut self,
        probes: &mut Vec<(
            String,
            usize,
            Option<oneshot::Sender<bool>>,
            tokio::time::Instant,
        )>,
        id: &str,
        on: Option<usize>,
    ) {
        let Some(at) = probes.iter().position(|(p, _, _, _)| p == id) else {
            return;
        };
        let (_, link, reply, _) = probes.swap_remove(at);
        let carried = on == Some(0) && self.index == 0;
        if carried {
            self.riders[link] = true;
        } else if self.riders[link] {
            self.riders[link] = false;
            let _ = self.mesh.control[link].send(Control::Alone);
        }
        if let Some(reply) = reply {
            let _ = reply.send(carried);
        }
    }

    /// A route probe nobody answered in time: a link waiting connects on its own; a
    /// rider stays (the server said nothing against it).
    pub(super) fn probe_expired(
        &mut self,
        probes: &mut Vec<(
            String,
            usize,
            Option<oneshot::Sender<bool>>,
            tokio::time::Instant,
        )>,
        id: &str,
    ) {
        if let Some(at) = probes.iter().position(|(p, _, _, _)| p == id) {
            let (_, _, reply, _) = probes.swap_remove(at);
            if let Some(reply) = reply {
                let _ = reply.send(false);
            }
        }
    }

    /// Sends a route probe for link `link`'s domain (an XEP-0199 ping from this link's
    /// domain to that one); its id, or `None` if the stream failed.
    pub(super) async fn send_probe(
        &self,
        component: &mut Connection,
        link: usize,
    ) -> Option<String> {
        let id = own_id(IdKind::Route, self.index, self.next_id());
        let to = self.mesh.domains.get(link)?.clone();
        self.send_iq_ping(component, &id, &to).await.then_some(id)
    }

    /// Ends the stream before riding on link 0's. First, what this stream wrote is
    /// confirmed (a barrier, answered on either stream), so that nothing handed to link 0
    /// afterwards can overtake it at the server; what stays unconfirmed is handed on
    /// first. Then what the server still sends on the stream is handled (it was routed
    /// here before the stream closed). Each step for at most a moment.
    pub(super) async fn drain_before_riding(
        &mut self,
        component: &mut Connection,
        unconfirmed: &mut Unconfirmed<Vec<Element>>,
    ) {
        let deadline = tokio::time::Instant::now() + DRAIN_BEFORE_RIDING;
        if !unconfirmed.is_empty() {
            let id = own_id(IdKind::Ack, self.index, self.next_id());
            let to = self.server_domain.clone();
            if self.send_iq_ping(component, &id, &to).await {
                unconfirmed.barrier_sent(id, tokio::time::Instant::now().into_std());
            }
        }
        while !unconfirmed.is_empty() {
            tokio::select! {
                incoming = tokio::time::timeout_at(deadline, component.next()) => {
                    let Ok(Some(stanza)) = incoming else { break };
                    let element = Element::from(stanza);
                    match own_iq(&element) {
                        Some(OwnIq::Answer { id, owner }) if owner == self.index => {
                            unconfirmed.answered(&id);
                        }
                        Some(OwnIq::Answer { id, owner }) => self.route_to(owner, Routed::Answer(id)),
                        Some(OwnIq::Probe { .. }) => {}
                        None => {
                            for reply in self.handle(&element).await {
                                if component.send(reply).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                }
                Some(routed) = self.routed.recv() => {
                    if let Routed::Answer(id) = routed {
                        unconfirmed.answered(&id);
                    }
                }
            }
        }
        let _ = component.send_end().await;
        let deadline = tokio::time::Instant::now() + DRAIN_BEFORE_RIDING;
        while let Ok(Some(stanza)) = tokio::time::timeout_at(deadline, component.next()).await {
            let element = Element::from(stanza);
            if own_iq(&element).is_some() {
                continue;
            }
            for reply in self.handle(&element).await {
                if component.send(reply).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// One of the links' own iqs coming back.
pub(super) enum OwnIq {
    /// The answer (result or error) to link `owner`'s iq.
    Answer { id: String, owner: usize },
    /// Link `owner`'s route probe, as the request it was.
    Probe { id: String, owner: usize },
}

/// Whether `element` is one of the links' own iqs coming back (see [`crate::confirm`]).
pub(super) fn own_iq(element: &Element) -> Option<OwnIq> {
    if element.name() != "iq" {
        return None;
    }
    let id = element.attr("id")?;
    let (kind, owner) = parse_own_id(id)?;
    let id = id.to_owned();
    match element.attr("type") {
        Some("result" | "error") => Some(OwnIq::Answer { id, owner }),
        Some("get") if kind == IdKind::Route => Some(OwnIq::Probe { id, owner }),
        _ => None,
    }
}

/// The domain part of a JID (`local@domain/resource`).
pub(super) fn jid_domain(jid: &str) -> &str {
    let bare = jid.split_once('/').map_or(jid, |(bare, _)| bare);
    bare.rsplit_once('@').map_or(bare, |(_, domain)| domain)
}
