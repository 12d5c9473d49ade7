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
/// reached where it is).
#[derive(Debug)]
pub struct Registrar {
    domains: HashMap<String, Vec<RegistrarUser>>,
    bindings: HashMap<String, Vec<Binding>>,
    nonces: HashMap<String, Duration>,
    seed: u64,
    counter: u64,
}

/// How long a nonce stays valid.
const NONCE_LIFETIME: Duration = Duration::from_secs(300);
/// Registration durations.
const DEFAULT_EXPIRES: u32 = 3600;
const MIN_EXPIRES: u32 = 60;

impl Registrar {
    /// A registrar for `domains` (domain → users).
    pub fn new(domains: Vec<(String, Vec<RegistrarUser>)>, seed: u64) -> Self {
        Registrar {
            domains: domains
                .into_iter()
                .map(|(d, users)| (d.to_ascii_lowercase(), users))
                .collect(),
            bindings: HashMap::new(),
            nonces: HashMap::new(),
            seed,
            counter: 0,
        }
    }

    fn nonce(&mut self, now: Duration) -> String {
        self.counter += 1;
        let n = (self.seed ^ self.counter.wrapping_mul(0x9E37_79B9_7F4A_7C15)).rotate_left(29);
        let nonce = format!("{n:016x}{:x}", self.counter);
        self.nonces.insert(nonce.clone(), now);
        nonce
    }

    fn challenge(&mut self, now: Duration, realm: &str, stale: bool) -> Fault {
        let nonce = self.nonce(now);
        let mut value =
            format!("Digest realm=\"{realm}\", nonce=\"{nonce}\", algorithm=MD5, qop=\"auth\"");
        if stale {
            value.push_str(", stale=true");
        }
        Fault::new(401, "Unauthorized").with_header("WWW-Authenticate", value)
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
        // An unknown user is challenged like a known one (no account enumeration).
        let account = users
            .iter()
            .find(|u| u.username == user)
            .cloned()
            .unwrap_or(RegistrarUser {
                username: String::new(),
                password: String::new(),
            });
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
        // Authentication.
        let Some(header) = view.header("Authorization") else {
            return Err(self.challenge(now, &domain, false));
        };
        let Some(params) = digest_params(header) else {
            return Err(self.challenge(now, &domain, false));
        };
        let nonce = params.get("nonce").cloned().unwrap_or_default();
        let fresh = self
            .nonces
            .get(&nonce)
            .is_some_and(|at| now.saturating_sub(*at) < NONCE_LIFETIME);
        if !fresh {
            return Err(self.challenge(now, &domain, true));
        }
        let Some(algo) = algorithm(params.get("algorithm")) else {
            return Err(self.challenge(now, &domain, false));
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
                    return Err(self.challenge(now, &domain, true));
                }
                Some(AuthQop::Auth {
                    cnonce: params.get("cnonce").cloned().unwrap_or_default(),
                    nc,
                })
            }
            _ => None,
        };
        let expected = compute_digest(
            &account.username,
            &account.password,
            params.get("realm").map_or("", String::as_str),
            &nonce,
            &Method::Register,
            params.get("uri").map_or("", String::as_str),
            algo,
            qop.as_ref(),
        );
        let valid = !account.username.is_empty()
            && params.get("username") == Some(&account.username)
            && params
                .get("realm")
                .is_some_and(|r| r.eq_ignore_ascii_case(&domain))
            && params
                .get("response")
                .is_some_and(|r| r.eq_ignore_ascii_case(&expected));
        if !valid {
            return Err(Fault::new(403, "Forbidden (wrong credentials)"));
        }
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
        self.bindings
            .get(aor)?
            .iter()
            .rev()
            .find(|b| b.expires_at > now)
            .map(|b| b.peer)
    }

    /// Drops expired bindings and nonces.
    pub fn expire(&mut self, now: Duration) {
        for list in self.bindings.values_mut() {
            list.retain(|b| b.expires_at > now);
        }
        self.bindings.retain(|_, l| !l.is_empty());
        self.nonces
            .retain(|_, at| now.saturating_sub(*at) < NONCE_LIFETIME);
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
        let mut r = Registrar::new(vec![("sip.test".into(), users)], 7);
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
        let www = r.challenge(now, "sip.test", false).headers[0].1.clone();
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
