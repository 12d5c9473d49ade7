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
        let outcome = lock(&self.publications).on_publish(
            self.now(),
            &aor,
            view.header("SIP-If-Match").map(str::trim),
            expires,
            presence.is_some(),
            || self.unique(),
        )?;
        match outcome {
            PublishOutcome::Published { etag, expires } => {
                if let Some(mut p) = presence {
                    p.entity = aor.clone();
                    lock(&self.published).insert(aor.clone(), p.clone());
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
        lock(&self.published).remove(aor);
        let presence = Presence::one_tuple(
            aor,
            cpim::presence::Tuple::new("gw", cpim::presence::Basic::Closed, None),
        );
        self.submit_from(aor, aor, Event::Presence(PresenceUpdate { presence }))
            .await;
    }

    pub(super) async fn on_register(&self, m: &RawMessage, view: &RequestView, peer: Peer) {
        let result = lock(&self.registrar).on_register(self.now(), view, peer);
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
