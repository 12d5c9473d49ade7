//! What a user of another network looks like to XMPP clients (XEP-0030, XEP-0115): the
//! disco#info of its JID on a component domain and the entity capabilities its presence
//! carries, so clients see that it takes delivery receipts (XEP-0184), chat markers
//! (XEP-0333) and chat states (XEP-0085) and ask for them. Its presence comes from one
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

/// The features a bridged user's JID announces.
pub const USER_FEATURES: [&str; 5] = [
    "http://jabber.org/protocol/caps",
    "http://jabber.org/protocol/chatstates",
    "http://jabber.org/protocol/disco#info",
    "urn:xmpp:chat-markers:0",
    "urn:xmpp:receipts",
];

/// The disco#info of a bridged user (its `node` as asked: none, or the caps node).
pub fn user_info(node: Option<String>) -> DiscoInfoResult {
    DiscoInfoResult {
        node,
        identities: vec![Identity::new(
            "client",
            "pc",
            "en",
            "cpim-gateway (a user of another network)",
        )],
        features: USER_FEATURES.iter().map(|f| (*f).to_owned()).collect(),
        extensions: Vec::<DataForm>::new(),
    }
}

fn caps() -> &'static Caps {
    static CAPS: OnceLock<Caps> = OnceLock::new();
    CAPS.get_or_init(|| {
        let input = compute_disco(&user_info(None));
        // SHA-1 is always available in xmpp-parsers: the error arm cannot be taken.
        let hash = hash_caps(&input, Algo::Sha_1).unwrap_or_else(|_| xmpp_parsers::hashes::Hash {
            algo: Algo::Sha_1,
            hash: Vec::new(),
        });
        Caps::new(NODE, hash)
    })
}

/// The `<c/>` element of a bridged user's available presence.
pub fn user_caps() -> Element {
    caps().clone().into()
}

/// The node a client asks disco#info about after seeing [`user_caps`]: `NODE#ver`.
pub fn caps_node() -> String {
    query_caps(caps().clone()).node.unwrap_or_default()
}

/// Whether a disco#info `node` is one a bridged user answers for (none, or its caps
/// node).
pub fn answers_node(node: Option<&str>) -> bool {
    node.is_none_or(|n| n == caps_node())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xep0115_5_the_ver_is_the_hash_of_the_users_disco_info() {
        // XEP-0115 §5.1: identities (category/type/lang/name<), then features (sorted, each
        // followed by '<'), SHA-1, base64.
        let input = String::from_utf8(compute_disco(&user_info(None))).unwrap_or_default();
        assert_eq!(
            input,
            "client/pc/en/cpim-gateway (a user of another network)<\
             http://jabber.org/protocol/caps<http://jabber.org/protocol/chatstates<\
             http://jabber.org/protocol/disco#info<urn:xmpp:chat-markers:0<urn:xmpp:receipts<"
        );
        let c = user_caps();
        assert_eq!(c.name(), "c");
        assert_eq!(c.ns(), "http://jabber.org/protocol/caps");
        assert_eq!(c.attr("hash"), Some("sha-1"));
        assert_eq!(c.attr("node"), Some(NODE));
        let ver = c.attr("ver").unwrap_or_default();
        assert_eq!(ver.len(), 28, "base64 of 20 bytes: {ver}");
        assert_eq!(caps_node(), format!("{NODE}#{ver}"));
        assert!(answers_node(None));
        assert!(answers_node(Some(&caps_node())));
        assert!(!answers_node(Some("other#x")));
    }
}
