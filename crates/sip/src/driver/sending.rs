//! Sending: where a request goes (registered contact, proxy, RFC 3263 host), MESSAGE
//! delivery with CPIM negotiation, and client transactions with digest answers.

use super::*;

impl Endpoint {
    /// Where a request for `uri` goes: a registered contact, the outbound proxy, or
    /// the URI's host (RFC 3263 without DNS SRV: the host's address records). A user of
    /// a registrar domain is reached only where it registered: never through DNS.
    /// `may_wait`: a message for an unregistered user may wait for it in the spool
    /// (`unregistered_users = "store"`).
    pub(super) async fn target_for(
        &self,
        uri: &cpim::address::SipUri,
        size: usize,
        may_wait: bool,
    ) -> Result<Target, DeliveryOutcome> {
        let standing = self.standing(uri.host().as_str());
        if let crate::trust::Standing::Denied(domain) = &standing {
            return Err(failed(
                Condition::Forbidden,
                format!("{domain} is not reached from here (denied_domains)"),
            ));
        }
        let aor = aor_key(&Address::Sip(uri.clone()));
        let registered = if self.registrar_on() {
            let (now, host) = (self.now(), uri.host().as_str().to_owned());
            let (aor, found) = self
                .owner
                .with(move |m| {
                    let found = match m.registrar.lookup_contact(now, &aor) {
                        Some((peer, contact)) => Some(Some((peer, contact_transport(contact)))),
                        None if m.registrar.serves(&host) => None,
                        None => Some(None),
                    };
                    (aor, found)
                })
                .await;
            match found {
                Some(registered) => registered,
                None => return Err(self.unregistered(&aor, may_wait)),
            }
        } else {
            None
        };
        let explicit = uri
            .param("transport")
            .flatten()
            .map(str::to_ascii_lowercase);
        let mut target = if let Some((peer, contact_transport)) = registered {
            Target {
                peer,
                alternatives: Vec::new(),
                tls_name: None,
                // What the contact itself says about its transports.
                udp_only: contact_transport.as_deref() == Some("udp"),
                registered: true,
                upgraded: false,
            }
        } else if let Some(proxy) = self.config.outbound_proxy {
            Target::plain(proxy)
        } else if let (Some(locator), crate::trust::Standing::Remote(_)) =
            (self.locator.as_ref(), &standing)
        {
            let wanted = crate::locate::Wanted::of(uri);
            let tls_only = self.config.require_tls.contains(&wanted.host);
            let usable: Vec<Transport> = [Transport::Udp, Transport::Tcp, Transport::Tls]
                .into_iter()
                .filter(|t| self.transports.can_send(*t) && (!tls_only || *t == Transport::Tls))
                .collect();
            let mut peers = locator.locate(&wanted, &usable).await.map_err(|e| {
                self.metrics.federation_error("dns");
                tracing::info!(to = %uri, error = %e, "RFC 3263: no server");
                failed(Condition::RemoteServerNotFound, e.to_string())
            })?;
            if tls_only {
                // Also when the URI itself names another transport.
                peers.retain(|p| p.transport == Transport::Tls);
                if peers.is_empty() {
                    return Err(failed(
                        Condition::PolicyViolation,
                        format!("{} is reached over TLS only (require_tls) and {uri} names another transport", wanted.host),
                    ));
                }
            }
            let peer = peers.remove(0);
            Target {
                alternatives: peers,
                tls_name: Some(wanted.host),
                ..Target::plain(peer)
            }
        } else {
            let peer = crate::transport::resolve(uri)
                .await
                .map_err(|e| failed(Condition::RemoteServerNotFound, e.to_string()))?;
            Target {
                // RFC 5922: over TLS, the server must be certified for the URI's domain.
                tls_name: tls_domain_of(&uri.to_string()),
                ..Target::plain(peer)
            }
        };
        if explicit.as_deref() == Some("udp") {
            target.udp_only = true;
        }
        if target.peer.transport == Transport::Udp && size > self.config.max_udp_message {
            // RFC 3428 §8: too large for UDP; a congestion-controlled transport where the
            // destination may take one, or at once policy-violation (RFC 7572 §6) where
            // it cannot: waiting would not make it fit.
            let too_big = |why: &str| {
                failed(
                    Condition::PolicyViolation,
                    format!(
                        "a {size}-byte MESSAGE is larger than {} bytes and {why}",
                        self.config.max_udp_message
                    ),
                )
            };
            if target.udp_only {
                return Err(too_big(&format!("{uri} takes UDP only")));
            }
            if !self.transports.can_send(Transport::Tcp) {
                return Err(too_big("the gateway has no TCP transport"));
            }
            target.peer.transport = Transport::Tcp;
            for alternative in &mut target.alternatives {
                if alternative.transport == Transport::Udp {
                    alternative.transport = Transport::Tcp;
                }
            }
            target.upgraded = true;
        }
        let peer = target.peer;
        if !self.transports.can_send(peer.transport) {
            return Err(failed(
                Condition::ServiceUnavailable,
                format!("no {} transport configured", peer.transport.token()),
            ));
        }
        Ok(target)
    }

    /// What the host of `uri` (or a `From`) is to the adapter: a remote domain found by
    /// RFC 3263 in DNS, a denied one, or neither.
    pub(super) fn standing(&self, host: &str) -> crate::trust::Standing {
        let claimed = || self.routes.claims_domain(host);
        self.config
            .remote
            .standing(host, self.config.remote.any && claimed())
    }

    /// The outcome for a message to `aor`, a user of a registrar domain with no binding.
    pub(super) fn unregistered(&self, aor: &str, may_wait: bool) -> DeliveryOutcome {
        if may_wait && self.config.unregistered_store {
            tracing::debug!(to = %aor, "not registered: the message waits");
            DeliveryOutcome::Waiting {
                after: UNREGISTERED_RETRY,
            }
        } else {
            failed(
                Condition::RecipientUnavailable,
                format!("{aor} is not registered"),
            )
        }
    }

    /// A message waits for its recipient, a registrar user, to register: a sender that
    /// asked for notifications is told once that it is stored (RFC 5438 §5.3
    /// `processing`/`stored`; an IMDN where the SIP sender asked for processing
    /// notifications, an event for an app; XMPP has no form for it).
    pub(super) async fn tell_stored(&self, envelope: &Envelope) {
        let Event::Message(m) = &envelope.event else {
            return;
        };
        if !m.receipts.any() {
            return;
        }
        let id = envelope.id;
        let first = self
            .owner
            .with(move |m| {
                if m.told_stored.len() >= MAX_TOLD_STORED {
                    m.told_stored.clear();
                }
                m.told_stored.insert(id)
            })
            .await;
        if !first {
            return;
        }
        let event = Event::Notification(cpim::event::Notification {
            message_id: envelope.id.to_string(),
            status: cpim::event::NotificationStatus::Stored,
        });
        self.submit_from(&envelope.to.to_string(), &envelope.from.to_string(), event)
            .await;
    }

    pub(super) fn remember_cpim(&self, aor: &str, takes: bool) {
        let aor = aor.to_owned();
        self.owner.tell(move |m| {
            let known = &mut m.takes_cpim;
            if known.len() >= MAX_REMEMBERED_CONTACTS && !known.contains_key(&aor) {
                known.clear();
            }
            known.insert(aor, takes);
        });
    }

    pub(super) async fn send_message(self: &Arc<Self>, envelope: &Envelope) -> DeliveryOutcome {
        let (aor, known) = self
            .owner
            .with({
                let aor = aor_key(&envelope.to);
                move |m| {
                    let known = m.takes_cpim.get(&aor).copied();
                    (aor, known)
                }
            })
            .await;
        let cpim = known.unwrap_or_else(|| {
            self.config
                .cpim_domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(envelope.to.domain()))
        });
        let mut attempt = match self.message_attempt(envelope, cpim).await {
            Ok(a) => a,
            Err(outcome) => {
                if matches!(outcome, DeliveryOutcome::Waiting { after } if after == UNREGISTERED_RETRY)
                {
                    self.tell_stored(envelope).await;
                }
                return outcome;
            }
        };
        // RFC 3261 §21.4.13: a 415 lists in `Accept` what the UA takes. A text-only
        // phone refusing CPIM gets the text as it is (and is remembered as such); the
        // receipts asked for cannot be requested from it.
        if attempt.1 && attempt.0.status == 415 && takes_plain(attempt.0.response.as_ref()) {
            self.remember_cpim(&aor, false);
            tracing::debug!(to = %aor, "415 to message/cpim: sending the text as it is");
            attempt = match self.message_attempt(envelope, false).await {
                Ok(a) => a,
                Err(outcome) => return outcome,
            };
        }
        let final_ = attempt.0;
        let retry_after = final_
            .response
            .as_ref()
            .and_then(|r| r.header("Retry-After"))
            .and_then(|r| headers::parse_retry_after(r).ok());
        if final_.tls_refused {
            // RFC 5922: no server DNS named is certified for the domain; waiting will
            // not change that.
            self.metrics.federation_error("tls_verify");
            return failed(
                Condition::RemoteServerNotFound,
                format!("TLS: {} ({})", final_.reason, envelope.to.domain()),
            );
        }
        if final_.status == 0 {
            // Transport error (RFC 3261 §8.1.3.1: like a 503): the peer is unreachable
            // for every message, so this one holds no one up; try again later.
            return DeliveryOutcome::Waiting {
                after: Duration::from_secs(5),
            };
        }
        let outcome = translate::outcome_for(final_.status, retry_after, &final_.reason);
        // Plain text cannot ask for a display notification (RFC 5438 needs CPIM): a
        // sender that asked for one hears that none will come.
        let asked_display = matches!(&envelope.event, Event::Message(m) if m.receipts.displayed);
        match outcome {
            DeliveryOutcome::Delivered | DeliveryOutcome::Accepted
                if asked_display && !attempt.1 =>
            {
                DeliveryOutcome::WithoutDisplay {
                    confirmed: outcome == DeliveryOutcome::Delivered,
                }
            }
            outcome => outcome,
        }
    }

    /// One MESSAGE transaction for `envelope`, as CPIM when `cpim`: its final response
    /// and whether CPIM was sent.
    pub(super) async fn message_attempt(
        self: &Arc<Self>,
        envelope: &Envelope,
        cpim: bool,
    ) -> Result<(Final, bool), DeliveryOutcome> {
        let options = OutboundOptions {
            cpim,
            now_unix_secs: i64::try_from(unix_now_ms() / 1000).unwrap_or(0),
        };
        let out = match translate::message_out(envelope, &options) {
            Ok(Some(out)) => out,
            Ok(None) => return Err(DeliveryOutcome::Accepted),
            Err(e) => return Err(failed(Condition::NotAcceptable, e.to_string())),
        };
        let sent_cpim = is_cpim_type(&out.content_type);
        let uri = match translate::sip_uri(&envelope.to) {
            Ok(u) => u,
            Err(e) => return Err(failed(Condition::JidMalformed, e.to_string())),
        };
        let size = out.body.len() + 600;
        let target = self.target_for(&uri, size, true).await?;
        let from = format!("<{}>;tag={}", out.from, self.unique());
        let to = format!("<{}>", out.to);
        // Without a thread to carry (RFC 7572 §6), the Call-ID is the gateway id: the same
        // on every attempt and after a restart, so that a receiver can drop a repeat.
        let call_id = out
            .call_id
            .clone()
            .unwrap_or_else(|| format!("{}@gw", envelope.id));
        let cseq = u32::try_from(self.counter.load(Ordering::Relaxed) % 1_000_000).unwrap_or(1) + 1;
        let headers = out.headers.clone();
        let mut peer = target.peer;
        let mut rest = target.alternatives.iter().copied();
        let mut final_;
        loop {
            final_ = self
                .transact_auth(
                    peer,
                    target.tls_name.as_deref(),
                    "MESSAGE",
                    &out.to,
                    |branch, sent_by, auth| {
                        let mut all = headers.clone();
                        all.extend(auth.iter().cloned());
                        OutRequest {
                            method: "MESSAGE",
                            uri: &out.to,
                            via_transport: peer.transport.token(),
                            via_sent_by: sent_by,
                            branch,
                            from: &from,
                            to: &to,
                            call_id: &call_id,
                            cseq: cseq + u32::from(!auth.is_empty()),
                            // 0 when the hop count is spent: the next element answers 483.
                            max_forwards: envelope.hops,
                            headers: &all,
                            body: Some((&out.content_type, &out.body)),
                        }
                        .to_bytes()
                    },
                )
                .await;
            // RFC 3263 §4.3: a transport error, a timeout or 503 moves on to the next
            // server DNS named.
            match rest.next() {
                Some(alternative) if matches!(final_.status, 0 | 408 | 503) => {
                    tracing::info!(to = %out.to, failed = %peer.addr, status = final_.status, next = %alternative.addr, "trying the next server");
                    peer = alternative;
                }
                _ => break,
            }
        }
        if final_.status == 0 && target.upgraded && target.registered {
            // A phone registered over UDP without a TCP listener: the message cannot
            // reach it, now or later (RFC 7572 §6).
            return Err(failed(
                Condition::PolicyViolation,
                format!(
                    "a {size}-byte MESSAGE is larger than {} bytes and the registered contact of {} takes no TCP",
                    self.config.max_udp_message, out.to
                ),
            ));
        }
        Ok((final_, sent_cpim))
    }

    /// Runs a client transaction, answering one 401/407 challenge with configured
    /// credentials (RFC 3261 §22.2, §22.3). `build` gets the branch, the Via sent-by
    /// and the authorization headers to add.
    pub(super) async fn transact_auth<F>(
        &self,
        peer: Peer,
        tls_domain: Option<&str>,
        method: &str,
        uri: &str,
        build: F,
    ) -> Final
    where
        F: Fn(&str, &str, &[(String, String)]) -> Vec<u8>,
    {
        let first = self
            .transact(peer, tls_domain, |b, s| build(b, s, &[]))
            .await;
        if !matches!(first.status, 401 | 407) || self.config.credentials.is_empty() {
            return first;
        }
        let Some(response) = &first.response else {
            return first;
        };
        let (challenge_name, answer_name) = if first.status == 401 {
            ("WWW-Authenticate", "Authorization")
        } else {
            ("Proxy-Authenticate", "Proxy-Authorization")
        };
        let Some(challenge) = response.header(challenge_name) else {
            return first;
        };
        let cnonce = self.unique();
        let Some(value) = auth::answer(challenge, &self.config.credentials, method, uri, &cnonce)
        else {
            return first;
        };
        let extra = vec![(answer_name.to_owned(), value)];
        self.transact(peer, tls_domain, |b, s| build(b, s, &extra))
            .await
    }

    /// Runs one client transaction (RFC 3261 §17.1.2). Status 0 = transport error,
    /// 408 = Timer F. `tls_domain`: the SIP domain a TLS server must be certified for
    /// (RFC 5922), when the request is for one.
    pub(super) async fn transact<F>(&self, peer: Peer, tls_domain: Option<&str>, build: F) -> Final
    where
        F: Fn(&str, &str) -> Vec<u8>,
    {
        let branch = self.branch();
        let sent_by = self.sent_by(peer.transport);
        let bytes = build(&branch, &sent_by);
        let (tx, mut rx) = mpsc::channel(8);
        let key = branch.clone();
        self.owner.tell(move |m| {
            m.clients.insert(key, tx);
        });
        let result = async {
            if let Err(e) = self.transports.send_for(peer, tls_domain, bytes.clone()).await {
                return Final {
                    status: 0,
                    reason: e.to_string(),
                    response: None,
                    tls_refused: peer.transport == Transport::Tls && e.kind() == std::io::ErrorKind::InvalidData,
                };
            }
            let mut machine = ClientTransaction::new(self.now(), peer.transport.reliable(), self.config.timers);
            loop {
                let wake = machine
                    .poll_timeout()
                    .map(|at| self.epoch + at)
                    .unwrap_or_else(|| Instant::now() + Duration::from_secs(60));
                tokio::select! {
                    response = rx.recv() => {
                        let Some(response) = response else { continue };
                        let status = response.status().unwrap_or(500);
                        if machine.on_response(self.now(), status) {
                            return Final { status, reason: response.start[2].clone(), response: Some(response), tls_refused: false };
                        }
                    }
                    () = tokio::time::sleep_until(wake) => {
                        match machine.on_timeout(self.now()) {
                            ClientAction::Retransmit => { let _ = self.transports.send_for(peer, tls_domain, bytes.clone()).await; }
                            ClientAction::TimedOut => return Final { status: 408, reason: "Request Timeout".into(), response: None, tls_refused: false },
                            ClientAction::Wait => {}
                        }
                    }
                }
            }
        }
        .await;
        self.owner.tell(move |m| {
            m.clients.remove(&branch);
        });
        result
    }
}

/// The SIP domain of `uri` that a TLS server must be certified for (RFC 5922 §7.2);
/// `None` for a numeric host or a URI that does not parse.
pub(super) fn tls_domain_of(uri: &str) -> Option<String> {
    let uri = cpim::address::SipUri::parse(uri).ok()?;
    let host = crate::locate::Wanted::of(&uri).host;
    host.parse::<std::net::IpAddr>().is_err().then_some(host)
}
