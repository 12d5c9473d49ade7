//! PUBLISH (the gateway as presence server of SIP users, RFC 3903) and REGISTER (the
//! gateway as registrar).

use super::*;

impl Endpoint {
    pub(super) async fn on_publish(&self, m: &RawMessage, view: &RequestView, peer: Peer) {
        match self.publish_inner(view).await {
            Ok((etag, expires)) => {
                let ok = Fault::new(200, "OK")
                    .with_header("SIP-ETag", etag)
                    .with_header("Expires", expires.to_string());
                self.reply(m, peer, &ok, None).await;
            }
            Err(fault) => self.reply(m, peer, &fault, None).await,
        }
    }

    pub(super) async fn publish_inner(&self, view: &RequestView) -> Result<(String, u32), Fault> {
        presence_only(view)?;
        let presentity = translate::recipient(view)?;
        if !self.serves(presentity.domain()) {
            return Err(Fault::new(404, "Not Found"));
        }
        let aor = aor_key(&presentity);
        let expires = view
            .header("Expires")
            .map(|e| headers::parse_delta_seconds("Expires", e))
            .transpose()?;
        let presence = pidf_body(view, false)?;
        let (now, etag, published) = (self.now(), self.unique(), presence.is_some());
        let if_match = view.header("SIP-If-Match").map(|v| v.trim().to_owned());
        let (aor, outcome) = self
            .owner
            .with(move |m| {
                let outcome = m.publications.on_publish(
                    now,
                    &aor,
                    if_match.as_deref(),
                    expires,
                    published,
                    || etag,
                );
                (aor, outcome)
            })
            .await;
        let outcome = outcome?;
        match outcome {
            PublishOutcome::Published { etag, expires } => {
                if let Some(mut p) = presence {
                    p.entity = aor.clone();
                    let (key, kept) = (aor.clone(), p.clone());
                    self.owner.tell(move |m| {
                        m.published.insert(key, kept);
                    });
                    self.submit_from(&aor, &aor, Event::Presence(PresenceUpdate { presence: p }))
                        .await;
                }
                Ok((etag, expires))
            }
            PublishOutcome::Refreshed { etag, expires } => Ok((etag, expires)),
            PublishOutcome::Removed { aor } => {
                self.submit_closed(&aor).await;
                Ok((self.unique(), 0))
            }
        }
    }

    /// The presentity withdrew its published state: its watchers see it offline.
    pub(super) async fn submit_closed(&self, aor: &str) {
        let key = aor.to_owned();
        self.owner.tell(move |m| {
            m.published.remove(&key);
        });
        let presence = Presence::one_tuple(
            aor,
            cpim::presence::Tuple::new("gw", cpim::presence::Basic::Closed, None),
        );
        self.submit_from(aor, aor, Event::Presence(PresenceUpdate { presence }))
            .await;
    }

    pub(super) async fn on_register(&self, m: &RawMessage, view: &RequestView, peer: Peer) {
        let (now, view) = (self.now(), view.clone());
        let result = self
            .owner
            .with(move |m| m.registrar.on_register(now, &view, peer))
            .await;
        match result {
            Ok(ok) => {
                let mut fault = Fault::new(200, "OK");
                for contact in ok {
                    fault = fault.with_header("Contact", contact);
                }
                self.reply(m, peer, &fault, None).await;
            }
            Err(fault) => self.reply(m, peer, &fault, None).await,
        }
    }
}
