//! What a user of another network looks like to XMPP clients (XEP-0030, XEP-0115): the
//! disco#info of its JID on a component domain and the entity capabilities its presence
//! carries, so clients see that it takes delivery receipts (XEP-0184), chat markers
//! (XEP-0333) and chat states (XEP-0085) and ask for them — or, for a text-only phone
//! ([`Profile::TextOnly`]), that it takes receipts only. Its presence comes from one
//! full JID, [`RESOURCE`], as a client's does. Pure: no I/O.

use std::sync::OnceLock;

use minidom::Element;
use xmpp_parsers::caps::{compute_disco, hash_caps, query_caps, Caps};
use xmpp_parsers::data_forms::DataForm;
use xmpp_parsers::disco::{DiscoInfoResult, Identity};
use xmpp_parsers::hashes::Algo;

/// The XEP-0115 node: the URI that names this software.
pub const NODE: &str = "https://github.com/cpim-gateway/cpim-gateway";

/// The resource a bridged user's presence comes from.
pub const RESOURCE: &str = "gw";

/// What a bridged user's client can do, as far as the gateway knows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Profile {
    /// Receipts, chat markers and chat states: what a user of another network is taken
    /// to take until its network says otherwise.
    #[default]
    Full,
    /// A text-only phone: its network confirms delivery, but no display notification
    /// or chat state can reach it (it answered CPIM with 415 and got plain text). XMPP
    /// clients that read the capabilities then do not wait for a displayed marker.
    TextOnly,
}

impl Profile {
    const ALL: [Self; 2] = [Self::Full, Self::TextOnly];

    /// The features a bridged user's JID announces.
    pub fn features(self) -> &'static [&'static str] {
        match self {
            Self::Full => &USER_FEATURES,
            Self::TextOnly => &TEXT_ONLY_FEATURES,
        }
    }
}

/// The features a bridged user's JID announces by default ([`Profile::Full`]).
pub const USER_FEATURES: [&str; 5] = [
    "http://jabber.org/protocol/caps",
    "http://jabber.org/protocol/chatstates",
    "http://jabber.org/protocol/disco#info",
    "urn:xmpp:chat-markers:0",
    "urn:xmpp:receipts",
];

/// The features of a text-only phone's JID ([`Profile::TextOnly`]).
pub const TEXT_ONLY_FEATURES: [&str; 3] = [
    "http://jabber.org/protocol/caps",
    "http://jabber.org/protocol/disco#info",
    "urn:xmpp:receipts",
];

/// The disco#info of a bridged user (its `node` as asked: none, or a caps node).
pub fn user_info(node: Option<String>, profile: Profile) -> DiscoInfoResult {
    DiscoInfoResult {
        node,
        identities: vec![Identity::new(
            "client",
            "pc",
            "en",
            "cpim-gateway (a user of another network)",
        )],
        features: profile.features().iter().map(|f| (*f).to_owned()).collect(),
        extensions: Vec::<DataForm>::new(),
    }
}

fn caps(profile: Profile) -> &'static Caps {
    static CAPS: OnceLock<[Caps; 2]> = OnceLock::new();
    let all = CAPS.get_or_init(|| {
        Profile::ALL.map(|p| {
            let input = compute_disco(&user_info(None, p));
            // SHA-1 is always available in xmpp-parsers: the error arm cannot be taken.
            let hash =
                hash_caps(&input, Algo::Sha_1).unwrap_or_else(|_| xmpp_parsers::hashes::Hash {
                    algo: Algo::Sha_1,
                    hash: Vec::new(),
                });
            Caps::new(NODE, hash)
        })
    });
    &all[profile as usize]
}

/// The `<c/>` element of a bridged user's available presence.
pub fn user_caps(profile: Profile) -> Element {
    caps(profile).clone().into()
}

/// The node a client asks disco#info about after seeing [`user_caps`]: `NODE#ver`.
pub fn caps_node(profile: Profile) -> String {
    query_caps(caps(profile).clone()).node.unwrap_or_default()
}

/// What a disco#info query about a bridged user answers: `current` (the JID's profile
/// now) without a `node`; the profile a caps node names (a client asking about a `ver`
/// it saw earlier gets what that `ver` stands for, XEP-0115 §6.2); `None` for a node
/// the gateway does not know.
pub fn profile_for_node(node: Option<&str>, current: Profile) -> Option<Profile> {
    match node {
        None => Some(current),
        Some(n) => Profile::ALL.into_iter().find(|p| caps_node(*p) == n),
    }
}

/// The bridged users known not to take the [`Profile::Full`] set, by bare JID (lower
/// case), at most `capacity` of them: past it the oldest is forgotten (and announces the
/// full set again until its network says otherwise).
#[derive(Debug)]
pub struct Profiles {
    capacity: usize,
    text_only: std::collections::HashSet<String>,
    order: std::collections::VecDeque<String>,
}

impl Profiles {
    /// An empty table keeping at most `capacity` users.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            text_only: std::collections::HashSet::new(),
            order: std::collections::VecDeque::new(),
        }
    }

    /// The profile of `bare_jid`.
    pub fn get(&self, bare_jid: &str) -> Profile {
        if self.text_only.contains(&bare_jid.to_ascii_lowercase()) {
            Profile::TextOnly
        } else {
            Profile::Full
        }
    }

    /// Records what `bare_jid` can do; `true` when that changed it.
    pub fn set(&mut self, bare_jid: &str, profile: Profile) -> bool {
        let key = bare_jid.to_ascii_lowercase();
        match profile {
            Profile::Full => {
                let changed = self.text_only.remove(&key);
                if changed {
                    self.order.retain(|k| *k != key);
                }
                changed
            }
            Profile::TextOnly => {
                if self.capacity == 0 || self.text_only.contains(&key) {
                    return false;
                }
                while self.text_only.len() >= self.capacity {
                    let Some(oldest) = self.order.pop_front() else {
                        break;
                    };
                    self.text_only.remove(&oldest);
                }
                self.order.push_back(key.clone());
                self.text_only.insert(key)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xep0115_5_the_ver_is_the_hash_of_the_users_disco_info() {
        // XEP-0115 §5.1: identities (category/type/lang/name<), then features (sorted, each
        // followed by '<'), SHA-1, base64.
        let input =
            String::from_utf8(compute_disco(&user_info(None, Profile::Full))).unwrap_or_default();
        assert_eq!(
            input,
            "client/pc/en/cpim-gateway (a user of another network)<\
             http://jabber.org/protocol/caps<http://jabber.org/protocol/chatstates<\
             http://jabber.org/protocol/disco#info<urn:xmpp:chat-markers:0<urn:xmpp:receipts<"
        );
        let c = user_caps(Profile::Full);
        assert_eq!(c.name(), "c");
        assert_eq!(c.ns(), "http://jabber.org/protocol/caps");
        assert_eq!(c.attr("hash"), Some("sha-1"));
        assert_eq!(c.attr("node"), Some(NODE));
        let ver = c.attr("ver").unwrap_or_default();
        assert_eq!(ver.len(), 28, "base64 of 20 bytes: {ver}");
        assert_eq!(caps_node(Profile::Full), format!("{NODE}#{ver}"));
        let full = caps_node(Profile::Full);
        assert_eq!(profile_for_node(None, Profile::Full), Some(Profile::Full));
        assert_eq!(
            profile_for_node(Some(&full), Profile::TextOnly),
            Some(Profile::Full)
        );
        assert_eq!(profile_for_node(Some("other#x"), Profile::Full), None);
    }

    #[test]
    fn profiles_remember_text_only_phones_up_to_their_capacity() {
        let mut p = Profiles::new(2);
        assert_eq!(p.get("a@gw"), Profile::Full);
        assert!(p.set("A@gw", Profile::TextOnly));
        assert!(!p.set("a@gw", Profile::TextOnly), "already known");
        assert_eq!(p.get("a@GW"), Profile::TextOnly);
        assert!(p.set("b@gw", Profile::TextOnly));
        assert!(p.set("c@gw", Profile::TextOnly));
        assert_eq!(p.get("a@gw"), Profile::Full, "the oldest is forgotten");
        assert_eq!(p.get("b@gw"), Profile::TextOnly);
        assert!(p.set("b@gw", Profile::Full));
        assert!(!p.set("b@gw", Profile::Full));
        assert_eq!(p.get("b@gw"), Profile::Full);
        assert_eq!(p.get("c@gw"), Profile::TextOnly);
        let mut none = Profiles::new(0);
        assert!(!none.set("a@gw", Profile::TextOnly));
    }

    #[test]
    fn a_text_only_phone_announces_receipts_but_no_markers_under_its_own_ver() {
        let input = String::from_utf8(compute_disco(&user_info(None, Profile::TextOnly)))
            .unwrap_or_default();
        assert_eq!(
            input,
            "client/pc/en/cpim-gateway (a user of another network)<\
             http://jabber.org/protocol/caps<http://jabber.org/protocol/disco#info<\
             urn:xmpp:receipts<"
        );
        let text_only = caps_node(Profile::TextOnly);
        assert_ne!(text_only, caps_node(Profile::Full));
        assert_eq!(
            profile_for_node(Some(&text_only), Profile::Full),
            Some(Profile::TextOnly)
        );
        assert_eq!(
            profile_for_node(None, Profile::TextOnly),
            Some(Profile::TextOnly)
        );
    }
}
