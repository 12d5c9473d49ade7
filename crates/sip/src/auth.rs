//! Digest authentication (RFC 3261 §22, RFC 2617 / RFC 8760 hashes through
//! `rsipstack`'s `compute_digest`) for both directions, and the minimal registrar
//! (RFC 3261 §10) a softphone can register to. Pure: time is passed in.

use std::collections::HashMap;
use std::time::Duration;

use rsipstack::dialog::authenticate::compute_digest;
use rsipstack::sip::headers::auth::{Algorithm, AuthQop};
use rsipstack::sip::Method;

use cpim::address::Address;

use crate::headers::{self, NameAddr};
use crate::translate::aor_key;
use crate::transport::Peer;
use crate::wire::{Fault, RequestView};

/// Credentials for a realm (or any realm when `realm` is `None`).
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The realm they are for.
    pub realm: Option<String>,
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("realm", &self.realm)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The `key=value` parameters of a `Digest` challenge or answer.
pub fn digest_params(value: &str) -> Option<HashMap<String, String>> {
    let rest = value.trim();
    let (scheme, rest) = rest.split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case("Digest") {
        return None;
    }
    let mut out = HashMap::new();
    for part in headers::split_top_level(rest, ',') {
        let (k, v) = part.split_once('=')?;
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|x| x.strip_suffix('"'))
            .unwrap_or(v);
        out.insert(k.trim().to_ascii_lowercase(), v.to_owned());
    }
    Some(out)
}

fn algorithm(name: Option<&String>) -> Option<Algorithm> {
    match name.map(|s| s.to_ascii_uppercase()).as_deref() {
        None | Some("MD5") => Some(Algorithm::Md5),
        Some("SHA-256") => Some(Algorithm::Sha256),
        // SHA-512-256 (RFC 8760) is not SHA-512: rsipstack has no SHA-512/256, so such a
        // challenge is not answered rather than answered wrongly.
        _ => None,
    }
}

fn method_of(name: &str) -> Option<Method> {
    name.parse().ok()
}

/// The `Authorization`/`Proxy-Authorization` value answering `challenge` for a
/// `method` request to `uri`, with the first matching credentials. `None` when no
/// credentials fit or the challenge cannot be answered.
pub fn answer(
    challenge: &str,
    credentials: &[Credential],
    method: &str,
    uri: &str,
    cnonce: &str,
) -> Option<String> {
    let params = digest_params(challenge)?;
    let realm = params.get("realm")?;
    let nonce = params.get("nonce")?;
    let algo = algorithm(params.get("algorithm"))?;
    let cred = credentials.iter().find(|c| {
        c.realm
            .as_deref()
            .is_none_or(|r| r.eq_ignore_ascii_case(realm))
    })?;
    let qop = params
        .get("qop")
        .filter(|q| q.split(',').any(|t| t.trim().eq_ignore_ascii_case("auth")))
        .map(|_| AuthQop::Auth {
            cnonce: cnonce.to_owned(),
            nc: 1,
        });
    let response = compute_digest(
        &cred.username,
        &cred.password,
        realm,
        nonce,
        &method_of(method)?,
        uri,
        algo,
        qop.as_ref(),
    );
    let mut value = format!(
        "Digest username=\"{}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm={}",
        cred.username,
        params.get("algorithm").map_or("MD5", String::as_str)
    );
    if qop.is_some() {
        value.push_str(&format!(", qop=auth, nc=00000001, cnonce=\"{cnonce}\""));
    }
    if let Some(opaque) = params.get("opaque") {
        value.push_str(&format!(", opaque=\"{opaque}\""));
    }
    Some(value)
}

/// A user allowed to register.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistrarUser {
    /// The user part of the address of record.
    pub username: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for RegistrarUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrarUser")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
struct Binding {
    contact: String,
    peer: Peer,
    expires_at: Duration,
}

/// The registrar: digest-authenticated REGISTER for configured domains, bindings
/// kept with the address the registration came from (so that a UA behind NAT is
/// reached where it is), and the same digest check for every other request that
/// speaks for one of its accounts (MESSAGE, PUBLISH, SUBSCRIBE), as a proxy challenges
/// its own domain's users (RFC 3261 §22.3: 407 with `Proxy-Authenticate`).
#[derive(Debug)]
pub struct Registrar {
    domains: HashMap<String, Vec<RegistrarUser>>,
    bindings: HashMap<String, Vec<Binding>>,
    /// The key of the nonces' tags: a nonce is its issue time and a tag over it, so
    /// that no state is kept per challenge (a flood of unanswered challenges costs
    /// nothing) and a nonce the gateway did not issue is never taken as fresh.
    secret: ring::hmac::Key,
    /// Peers whose requests are taken as already authenticated (a proxy in front that
    /// challenges the users itself).
    trusted: Vec<std::net::IpAddr>,
}

/// How long a nonce stays valid.
const NONCE_LIFETIME: Duration = Duration::from_secs(300);
/// Registration durations.
const DEFAULT_EXPIRES: u32 = 3600;
const MIN_EXPIRES: u32 = 60;

/// Which header pair a check uses: a registrar's own (401, `WWW-Authenticate`,
/// `Authorization`) or a proxy's (407, `Proxy-Authenticate`, `Proxy-Authorization`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Registrar,
    Proxy,
}

impl Role {
    fn challenge_header(self) -> &'static str {
        match self {
            Role::Registrar => "WWW-Authenticate",
            Role::Proxy => "Proxy-Authenticate",
        }
    }

    fn answer_header(self) -> &'static str {
        match self {
            Role::Registrar => "Authorization",
            Role::Proxy => "Proxy-Authorization",
        }
    }

    fn fault(self) -> Fault {
        match self {
            Role::Registrar => Fault::new(401, "Unauthorized"),
            Role::Proxy => Fault::new(407, "Proxy Authentication Required"),
        }
    }
}

impl Registrar {
    /// A registrar for `domains` (domain → users); `secret` keys the nonces (random,
    /// from the caller).
    pub fn new(domains: Vec<(String, Vec<RegistrarUser>)>, secret: &[u8]) -> Self {
        Registrar {
            domains: domains
                .into_iter()
                .map(|(d, users)| (d.to_ascii_lowercase(), users))
                .collect(),
            bindings: HashMap::new(),
            secret: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
            trusted: Vec::new(),
        }
    }

    /// Takes requests from these addresses as authenticated already.
    pub fn with_trusted(mut self, trusted: Vec<std::net::IpAddr>) -> Self {
        self.trusted = trusted;
        self
    }

    fn tag(&self, issued: &str) -> String {
        let tag = ring::hmac::sign(&self.secret, issued.as_bytes());
        tag.as_ref()[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn nonce(&self, now: Duration) -> String {
        let issued = format!("{:x}", now.as_millis());
        let tag = self.tag(&issued);
        format!("{issued}.{tag}")
    }

    /// Whether `nonce` was issued here less than [`NONCE_LIFETIME`] ago.
    fn fresh(&self, now: Duration, nonce: &str) -> bool {
        let Some((issued, tag)) = nonce.split_once('.') else {
            return false;
        };
        let Ok(ms) = u64::from_str_radix(issued, 16) else {
            return false;
        };
        let at = Duration::from_millis(ms);
        at <= now && now - at < NONCE_LIFETIME && self.tag(issued) == tag
    }

    fn challenge(&self, now: Duration, realm: &str, stale: bool, role: Role) -> Fault {
        let nonce = self.nonce(now);
        let mut value =
            format!("Digest realm=\"{realm}\", nonce=\"{nonce}\", algorithm=MD5, qop=\"auth\"");
        if stale {
            value.push_str(", stale=true");
        }
        role.fault().with_header(role.challenge_header(), value)
    }

    /// Whether `domain` is one of the registrar's.
    pub fn serves(&self, domain: &str) -> bool {
        self.domains.contains_key(&domain.to_ascii_lowercase())
    }

    /// Checks a request other than REGISTER that speaks for an account: one whose
    /// `From` is at a registrar domain must carry a valid `Proxy-Authorization` of
    /// that very user (407 with a challenge otherwise, 403 for wrong credentials),
    /// unless it comes from a trusted peer. Requests from other domains pass (the
    /// adapter's other trust rules apply to them).
    pub fn authorize(&self, now: Duration, view: &RequestView, peer: Peer) -> Result<(), Fault> {
        let Ok(Address::Sip(uri)) = Address::parse(&view.from.uri) else {
            return Ok(());
        };
        let domain = uri.host().as_str().to_ascii_lowercase();
        let Some(users) = self.domains.get(&domain) else {
            return Ok(());
        };
        if self.trusted.contains(&peer.addr.ip()) {
            return Ok(());
        }
        let user = uri.user().ok().flatten().unwrap_or_default();
        let account = users.iter().find(|u| u.username == user);
        self.verify(now, view, &domain, account, Role::Proxy)
    }

    /// The digest check of `view` against `account` (`None`: an unknown user, who is
    /// challenged like a known one so that accounts cannot be enumerated, and then
    /// refused).
    fn verify(
        &self,
        now: Duration,
        view: &RequestView,
        domain: &str,
        account: Option<&RegistrarUser>,
        role: Role,
    ) -> Result<(), Fault> {
        // A request may carry answers for several realms (one per proxy on the path):
        // ours is the one naming this domain.
        let params = view
            .all(role.answer_header())
            .filter_map(digest_params)
            .find(|p| {
                p.get("realm")
                    .is_some_and(|r| r.eq_ignore_ascii_case(domain))
            });
        let Some(params) = params else {
            return Err(self.challenge(now, domain, false, role));
        };
        let nonce = params.get("nonce").cloned().unwrap_or_default();
        if !self.fresh(now, &nonce) {
            return Err(self.challenge(now, domain, true, role));
        }
        let Some(algo) = algorithm(params.get("algorithm")) else {
            return Err(self.challenge(now, domain, false, role));
        };
        let qop = match params.get("qop").map(|q| q.to_ascii_lowercase()) {
            Some(q) if q == "auth" => {
                let nc = params
                    .get("nc")
                    .and_then(|n| u8::from_str_radix(n, 16).ok())
                    .unwrap_or(0);
                // `compute_digest` writes the nonce count in decimal, which agrees with
                // the hex of RFC 2617 only below 10: ask for a fresh nonce instead.
                if nc >= 10 {
                    return Err(self.challenge(now, domain, true, role));
                }
                Some(AuthQop::Auth {
                    cnonce: params.get("cnonce").cloned().unwrap_or_default(),
                    nc,
                })
            }
            _ => None,
        };
        let Some(method) = method_of(&view.method) else {
            return Err(Fault::new(403, "Forbidden (wrong credentials)"));
        };
        let Some(account) = account else {
            return Err(Fault::new(403, "Forbidden (wrong credentials)"));
        };
        let expected = compute_digest(
            &account.username,
            &account.password,
            params.get("realm").map_or("", String::as_str),
            &nonce,
            &method,
            params.get("uri").map_or("", String::as_str),
            algo,
            qop.as_ref(),
        );
        let valid = params.get("username") == Some(&account.username)
            && params
                .get("response")
                .is_some_and(|r| r.eq_ignore_ascii_case(&expected));
        if !valid {
            return Err(Fault::new(403, "Forbidden (wrong credentials)"));
        }
        Ok(())
    }

    /// Handles a REGISTER: `Ok` with the `Contact` values of the current bindings.
    pub fn on_register(
        &mut self,
        now: Duration,
        view: &RequestView,
        peer: Peer,
    ) -> Result<Vec<String>, Fault> {
        let aor = Address::parse(&view.to.uri)
            .map_err(|_| Fault::new(400, "Bad Request (unreadable To URI)"))?;
        let Address::Sip(uri) = &aor else {
            return Err(Fault::new(
                400,
                "Bad Request (the address of record is not a SIP URI)",
            ));
        };
        let domain = uri.host().as_str().to_ascii_lowercase();
        let Some(users) = self.domains.get(&domain).cloned() else {
            return Err(Fault::new(
                403,
                "Forbidden (not a registrar for this domain)",
            ));
        };
        let user = uri.user().ok().flatten().unwrap_or_default();
        let account = users.iter().find(|u| u.username == user).cloned();
        // Bindings.
        let key = aor_key(&aor);
        let default = view
            .header("Expires")
            .map(|e| headers::parse_delta_seconds("Expires", e))
            .transpose()?
            .unwrap_or(DEFAULT_EXPIRES);
        let contacts: Vec<&str> = view.all("Contact").collect();
        let star = contacts.iter().any(|c| c.trim() == "*");
        if star && (contacts.len() != 1 || default != 0) {
            return Err(Fault::new(400, "Bad Request (Contact: * needs Expires: 0)"));
        }
        let contacts: Vec<&str> = if star { Vec::new() } else { contacts };
        let mut parsed = Vec::new();
        for value in &contacts {
            for one in headers::split_top_level(value, ',') {
                let contact = NameAddr::parse("Contact", one)?;
                let expires = contact
                    .param("expires")
                    .flatten()
                    .map(|e| headers::parse_delta_seconds("Contact", e))
                    .transpose()?
                    .unwrap_or(default);
                if expires != 0 && expires < MIN_EXPIRES {
                    return Err(Fault::new(423, "Interval Too Brief")
                        .with_header("Min-Expires", MIN_EXPIRES.to_string()));
                }
                parsed.push((contact.uri, expires));
            }
        }
        self.verify(now, view, &domain, account.as_ref(), Role::Registrar)?;
        if star {
            self.bindings.remove(&key);
            return Ok(Vec::new());
        }
        for (contact, expires) in parsed {
            let list = self.bindings.entry(key.clone()).or_default();
            list.retain(|b| b.contact != contact);
            if expires > 0 {
                list.push(Binding {
                    contact,
                    peer,
                    expires_at: now + Duration::from_secs(u64::from(expires.min(DEFAULT_EXPIRES))),
                });
            }
        }
        Ok(self
            .bindings
            .get(&key)
            .map(|list| {
                list.iter()
                    .map(|b| {
                        let left = b.expires_at.saturating_sub(now).as_secs();
                        format!("<{}>;expires={left}", b.contact)
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Where the latest registered contact of `aor` is reached.
    pub fn lookup(&self, now: Duration, aor: &str) -> Option<Peer> {
        self.lookup_contact(now, aor).map(|(peer, _)| peer)
    }

    /// The latest registered contact of `aor`: where it is reached, and its Contact URI.
    pub fn lookup_contact(&self, now: Duration, aor: &str) -> Option<(Peer, &str)> {
        self.bindings
            .get(aor)?
            .iter()
            .rev()
            .find(|b| b.expires_at > now)
            .map(|b| (b.peer, b.contact.as_str()))
    }

    /// Drops expired bindings.
    pub fn expire(&mut self, now: Duration) {
        for list in self.bindings.values_mut() {
            list.retain(|b| b.expires_at > now);
        }
        self.bindings.retain(|_, l| !l.is_empty());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::transport::Transport;
    use crate::wire::{check_request, frame, Framed};

    fn register(auth: Option<&str>, expires: &str) -> RequestView {
        let auth = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        let text = format!(
            "REGISTER sip:sip.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-r\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@sip.test>;tag=1\r\nTo: <sip:alice@sip.test>\r\n\
             Call-ID: reg1\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@127.0.0.1:5070>\r\n\
             Expires: {expires}\r\n{auth}Content-Length: 0\r\n\r\n"
        );
        let Framed::Message(m) = frame(text.as_bytes()) else {
            panic!()
        };
        check_request(&m, true).unwrap()
    }

    #[test]
    fn rfc3261_22_registrar_challenges_then_binds_and_unbinds() {
        let users = vec![RegistrarUser {
            username: "alice".into(),
            password: "secret".into(),
        }];
        let mut r = Registrar::new(vec![("sip.test".into(), users)], b"test secret");
        let peer = Peer {
            transport: Transport::Udp,
            addr: "127.0.0.1:5070".parse().unwrap(),
        };
        let now = Duration::from_secs(10);
        let challenge = r
            .on_register(now, &register(None, "600"), peer)
            .unwrap_err();
        assert_eq!(challenge.status, 401);
        let www = &challenge.headers[0].1;
        let creds = [Credential {
            realm: None,
            username: "alice".into(),
            password: "secret".into(),
        }];
        // The client side of this module answers the registrar's challenge.
        let answer_value = answer(www, &creds, "REGISTER", "sip:sip.test", "c0ffee").unwrap();
        let contacts = r
            .on_register(now, &register(Some(&answer_value), "600"), peer)
            .unwrap();
        assert_eq!(
            contacts,
            vec!["<sip:alice@127.0.0.1:5070>;expires=600".to_owned()]
        );
        assert_eq!(r.lookup(now, "sip:alice@sip.test"), Some(peer));
        // Wrong password: 403.
        let wrong = [Credential {
            realm: None,
            username: "alice".into(),
            password: "nope".into(),
        }];
        let bad = answer(www, &wrong, "REGISTER", "sip:sip.test", "c0ffee").unwrap();
        assert_eq!(
            r.on_register(now, &register(Some(&bad), "600"), peer)
                .unwrap_err()
                .status,
            403
        );
        // Expiry, then an unknown nonce is stale.
        r.expire(now + Duration::from_secs(601));
        assert_eq!(
            r.lookup(now + Duration::from_secs(601), "sip:alice@sip.test"),
            None
        );
        let stale = r
            .on_register(
                now + Duration::from_secs(601),
                &register(Some(&answer_value), "600"),
                peer,
            )
            .unwrap_err();
        assert_eq!(stale.status, 401);
        assert!(stale.headers[0].1.contains("stale=true"));
        // Too brief.
        let www = r.challenge(now, "sip.test", false, Role::Registrar).headers[0]
            .1
            .clone();
        let a = answer(&www, &creds, "REGISTER", "sip:sip.test", "x").unwrap();
        assert_eq!(
            r.on_register(now, &register(Some(&a), "5"), peer)
                .unwrap_err()
                .status,
            423
        );
        let a = answer(&www, &creds, "REGISTER", "sip:sip.test", "x").unwrap();
        assert!(r
            .on_register(now, &register(Some(&a), "0"), peer)
            .unwrap()
            .is_empty());
    }

    fn message(from: &str, auth: Option<&str>) -> RequestView {
        let auth = auth
            .map(|a| format!("Proxy-Authorization: {a}\r\n"))
            .unwrap_or_default();
        let text = format!(
            "MESSAGE sip:bob@elsewhere.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-m\r\n\
             Max-Forwards: 70\r\nFrom: <{from}>;tag=1\r\nTo: <sip:bob@elsewhere.test>\r\n\
             Call-ID: m1\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\n{auth}Content-Length: 2\r\n\r\nhi"
        );
        let Framed::Message(m) = frame(text.as_bytes()) else {
            panic!()
        };
        check_request(&m, true).unwrap()
    }

    /// A request speaking for an account of a registrar domain is challenged like a
    /// proxy challenges its own users (RFC 3261 §22.3), and passes only with that
    /// user's own credentials, on a nonce issued here and still fresh.
    #[test]
    fn rfc3261_22_3_requests_for_registrar_accounts_are_challenged_with_407() {
        let users = vec![
            RegistrarUser {
                username: "alice".into(),
                password: "secret".into(),
            },
            RegistrarUser {
                username: "mallory".into(),
                password: "mine".into(),
            },
        ];
        let trusted_ip: std::net::IpAddr = "10.0.0.5".parse().unwrap();
        let r =
            Registrar::new(vec![("sip.test".into(), users)], b"k").with_trusted(vec![trusted_ip]);
        let peer = Peer {
            transport: Transport::Udp,
            addr: "127.0.0.1:5070".parse().unwrap(),
        };
        let now = Duration::from_secs(100);
        // Other domains are not the registrar's business.
        assert!(r
            .authorize(now, &message("sip:carol@other.test", None), peer)
            .is_ok());
        let challenge = r
            .authorize(now, &message("sip:alice@sip.test", None), peer)
            .unwrap_err();
        assert_eq!(challenge.status, 407);
        assert_eq!(challenge.headers[0].0, "Proxy-Authenticate");
        let www = challenge.headers[0].1.clone();
        let alice = [Credential {
            realm: None,
            username: "alice".into(),
            password: "secret".into(),
        }];
        let uri = "sip:bob@elsewhere.test";
        let good = answer(&www, &alice, "MESSAGE", uri, "c1").unwrap();
        assert!(r
            .authorize(now, &message("sip:alice@sip.test", Some(&good)), peer)
            .is_ok());
        // The answer is bound to the method.
        let as_register = answer(&www, &alice, "REGISTER", uri, "c1").unwrap();
        assert_eq!(
            r.authorize(
                now,
                &message("sip:alice@sip.test", Some(&as_register)),
                peer
            )
            .unwrap_err()
            .status,
            403
        );
        // Mallory's own valid credentials do not let her write as alice.
        let mallory = [Credential {
            realm: None,
            username: "mallory".into(),
            password: "mine".into(),
        }];
        let hers = answer(&www, &mallory, "MESSAGE", uri, "c2").unwrap();
        assert_eq!(
            r.authorize(now, &message("sip:alice@sip.test", Some(&hers)), peer)
                .unwrap_err()
                .status,
            403
        );
        // An unknown user is challenged, then refused.
        assert_eq!(
            r.authorize(now, &message("sip:nobody@sip.test", None), peer)
                .unwrap_err()
                .status,
            407
        );
        let nobody = [Credential {
            realm: None,
            username: "nobody".into(),
            password: "x".into(),
        }];
        let a = answer(&www, &nobody, "MESSAGE", uri, "c3").unwrap();
        assert_eq!(
            r.authorize(now, &message("sip:nobody@sip.test", Some(&a)), peer)
                .unwrap_err()
                .status,
            403
        );
        // Later than the nonce's lifetime: stale, challenged again.
        let late = r
            .authorize(
                now + NONCE_LIFETIME,
                &message("sip:alice@sip.test", Some(&good)),
                peer,
            )
            .unwrap_err();
        assert_eq!(late.status, 407);
        assert!(late.headers[0].1.contains("stale=true"));
        // A nonce the gateway did not issue (a forged issue time) is not fresh.
        let forged_www = www.replace(
            digest_params(&www).unwrap()["nonce"].as_str(),
            &format!("{:x}.00000000", now.as_millis()),
        );
        let forged = answer(&forged_www, &alice, "MESSAGE", uri, "c4").unwrap();
        assert!(r
            .authorize(now, &message("sip:alice@sip.test", Some(&forged)), peer)
            .unwrap_err()
            .headers[0]
            .1
            .contains("stale=true"));
        // A trusted proxy in front authenticates its users itself.
        let proxy = Peer {
            transport: Transport::Udp,
            addr: std::net::SocketAddr::new(trusted_ip, 5060),
        };
        assert!(r
            .authorize(now, &message("sip:alice@sip.test", None), proxy)
            .is_ok());
    }

    #[test]
    fn digest_answer_matches_rfc2617_example_shape() {
        let challenge = "Digest realm=\"testrealm@host.com\", qop=\"auth\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"";
        let creds = [Credential {
            realm: Some("testrealm@host.com".into()),
            username: "Mufasa".into(),
            password: "Circle Of Life".into(),
        }];
        let a = answer(challenge, &creds, "REGISTER", "sip:host.com", "0a4f113b").unwrap();
        let p = digest_params(&a).unwrap();
        assert_eq!(p["username"], "Mufasa");
        assert_eq!(p["opaque"], "5ccc069c403ebaf9f0171e9517f40e41");
        assert_eq!(p["response"].len(), 32);
        let other = [Credential {
            realm: Some("elsewhere".into()),
            username: "x".into(),
            password: "y".into(),
        }];
        assert_eq!(
            answer(challenge, &other, "REGISTER", "sip:host.com", "c"),
            None
        );
    }
}
