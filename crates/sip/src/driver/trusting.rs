//! Who may speak for a sender's domain (issue 16), as the driver decides it: what
//! configuration and TLS say at once, and what only DNS can say without holding up the
//! receive loop (a per-domain queue answered in arrival order). The rules are
//! `crate::trust`'s.

use super::*;

/// The longest a request from a remote domain waits for DNS to say who may speak
/// for it.
const TRUST_LOOKUP: Duration = Duration::from_secs(2);

/// A request waiting for a trust lookup.
pub(super) type Waiting = (RawMessage, RequestView, Peer);

/// At most this many requests wait for the trust lookups of one domain; beyond it a
/// request is answered 503 at once.
const TRUST_WAITING_MAX: usize = 1024;

/// What is known of a sender's right to its `From` before DNS is asked.
pub(super) enum Verdict {
    Allowed,
    Refused(Fault),
    /// Only DNS can say: the remote domain, lowercase.
    AskDns(String),
}

impl Endpoint {
    /// Issue 16: a `From` at a remote domain is taken only from a peer trusted for it
    /// (`crate::trust`): 403 otherwise. What configuration and TLS decide is decided
    /// here; what only DNS can say is [`Verdict::AskDns`].
    pub(super) fn may_speak_for(&self, view: &RequestView, peer: Peer) -> Verdict {
        let Ok(from) = cpim::address::SipUri::parse(&view.from.uri) else {
            return Verdict::Allowed; // not a SIP URI: the translation refuses it
        };
        let domain = match self.standing(from.host().as_str()) {
            crate::trust::Standing::NotRemote => {
                return self.own_sender(view, peer, from.host().as_str())
            }
            crate::trust::Standing::Denied(domain) => {
                self.metrics.federation_error("untrusted_peer");
                self.metrics.rejected(Condition::Forbidden);
                tracing::info!(from = %view.from.uri, peer = %peer.addr, "refused: {domain} is denied (denied_domains)");
                return Verdict::Refused(Fault::new(
                    403,
                    format!("Forbidden ({domain} is not accepted here)"),
                ));
            }
            crate::trust::Standing::Remote(domain) => domain,
        };
        if self.config.require_tls.contains(&domain) {
            // Only a TLS certificate naming the domain counts (RFC 5922 §7.3).
            if self.transports.certified_for(peer, &domain) {
                return Verdict::Allowed;
            }
            self.metrics.federation_error("untrusted_peer");
            self.metrics.rejected(Condition::Forbidden);
            tracing::info!(from = %view.from.uri, peer = %peer.addr, "refused: {domain} requires a TLS peer certified for it");
            return Verdict::Refused(Fault::new(
                403,
                format!(
                    "Forbidden ({domain} is accepted only over TLS from a peer certified for it)"
                ),
            ));
        }
        let decision = crate::trust::decide(
            &domain,
            peer.addr.ip(),
            &self.config.trusted_peers,
            &self.proxies,
        );
        if decision == crate::trust::Decision::Trusted
            || self.transports.certified_for(peer, &domain)
            || self.locator.is_none()
        {
            // Trusted by configuration, or its TLS certificate names the domain
            // (RFC 5922 §7.3).
            return Verdict::Allowed;
        }
        Verdict::AskDns(domain)
    }

    /// A sender at one of the gateway's own domains: from anyone unless the domain is
    /// guarded (a proxy or `trusted_peers` is configured), then only from a proxy, the
    /// domain's trusted peers or a TLS peer certified for it.
    fn own_sender(&self, view: &RequestView, peer: Peer, host: &str) -> Verdict {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if !self.guarded_domains.contains(&host)
            || crate::trust::decide(
                &host,
                peer.addr.ip(),
                &self.config.trusted_peers,
                &self.proxies,
            ) == crate::trust::Decision::Trusted
            || self.transports.certified_for(peer, &host)
        {
            return Verdict::Allowed;
        }
        self.metrics.federation_error("untrusted_peer");
        self.metrics.rejected(Condition::Forbidden);
        tracing::info!(from = %view.from.uri, peer = %peer.addr, "refused: the peer is neither a proxy nor a trusted peer of {host}");
        Verdict::Refused(Fault::new(
            403,
            format!("Forbidden ({} may not speak for {host})", peer.addr.ip()),
        ))
    }

    /// Queues `request` behind the other requests waiting for DNS about `domain`; the
    /// first of them starts a task that asks DNS (cached answers come at once) and
    /// answers them in arrival order, so that the receive loop never waits for DNS
    /// and a sender's requests keep their order.
    pub(super) async fn wait_for_trust(self: &Arc<Self>, domain: String, request: Waiting) {
        let (first, request) = {
            let Ok(mut waiting) = self.trust_waiting.lock() else {
                return;
            };
            match waiting.get_mut(&domain) {
                Some(queue) if queue.len() >= TRUST_WAITING_MAX => (false, request),
                Some(queue) => {
                    queue.push_back(request);
                    return;
                }
                None => {
                    waiting.insert(domain.clone(), std::collections::VecDeque::new());
                    (true, request)
                }
            }
        };
        if !first {
            let (m, _, peer) = request;
            self.metrics.rejected(Condition::ServiceUnavailable);
            let fault = Fault::new(
                503,
                "Service Unavailable (too many requests wait to verify the sender's domain)",
            )
            .with_header("Retry-After", "5");
            self.reply(&m, peer, &fault, None).await;
            return;
        }
        let endpoint = self.clone();
        tokio::spawn(async move {
            let mut next = Some(request);
            while let Some((m, view, peer)) = next.take() {
                match endpoint.among_servers_of(&domain, &view, peer).await {
                    Ok(()) => endpoint.clone().dispatch(m, view, peer).await,
                    Err(fault) => endpoint.reply(&m, peer, &fault, None).await,
                }
                next = match endpoint.trust_waiting.lock() {
                    Ok(mut waiting) => {
                        let queued = waiting.get_mut(&domain).and_then(|q| q.pop_front());
                        if queued.is_none() {
                            waiting.remove(&domain);
                        }
                        queued
                    }
                    Err(_) => None,
                };
            }
        });
    }

    /// Whether `peer` is one of the SIP servers DNS names for `domain`: 403 if not,
    /// 503 + `Retry-After` while DNS cannot say.
    async fn among_servers_of(
        &self,
        domain: &str,
        view: &RequestView,
        peer: Peer,
    ) -> Result<(), Fault> {
        let Some(locator) = &self.locator else {
            return Ok(());
        };
        // Answers are cached for their TTL; an uncached one is waited for at most
        // TRUST_LOOKUP.
        let servers = tokio::time::timeout(TRUST_LOOKUP, locator.servers_of(domain))
            .await
            .unwrap_or_else(|_| {
                Err(dns::LocateError::Lookup {
                    name: domain.to_owned(),
                    kind: "NAPTR/SRV/A",
                    reason: format!("no answer within {TRUST_LOOKUP:?}"),
                })
            });
        match servers {
            Ok(servers) if crate::trust::among_servers(peer.addr.ip(), &servers) => Ok(()),
            Ok(_) => {
                self.metrics.federation_error("untrusted_peer");
                self.metrics.rejected(Condition::Forbidden);
                tracing::info!(from = %view.from.uri, peer = %peer.addr, "refused: the peer may not speak for {domain}");
                Err(Fault::new(
                    403,
                    format!("Forbidden ({} may not speak for {domain})", peer.addr.ip()),
                ))
            }
            Err(e) => {
                self.metrics.federation_error("dns");
                self.metrics.rejected(Condition::ServiceUnavailable);
                tracing::info!(from = %view.from.uri, error = %e, "cannot tell who may speak for {domain}");
                Err(Fault::new(
                    503,
                    "Service Unavailable (cannot verify the sender's domain now)",
                )
                .with_header("Retry-After", "5"))
            }
        }
    }
}
