//! `cpim` — the shared model of cpim-gateway.
//!
//! Every protocol adapter translates into and out of these types; the broker routes them.
//! The crate is pure: no I/O, no async runtime, no clock reads (time comes in as an
//! argument). Everything byte-facing is a parser that returns a typed error and never
//! panics on input.
//!
//! - [`address`]: `sip:`/`sips:`, `im:`/`pres:`, XMPP JIDs; RFC 7247 §6 and XEP-0106.
//! - [`message`]: `message/cpim` (RFC 3862) parse and serialize, byte-exact for unchanged
//!   messages.
//! - [`condition`]: the RFC 6120 stanza-error conditions, RFC 7247 §7 SIP status tables,
//!   and the HTTP status mapping of the webhook side.
//! - [`datetime`]: RFC 3339 timestamps (strict and lenient parsing).
//! - [`presence`]: PIDF (RFC 3863) with person/device (RFC 4479), the RPID subset
//!   (RFC 4480) and the XMPP `<show/>` embedding of RFC 7248.
//! - [`imdn`]: `message/imdn+xml` and the `Disposition-Notification` header (RFC 5438).
//! - [`iscomposing`]: `application/im-iscomposing+xml` (RFC 3994).
//! - [`event`]: the events adapters exchange through the broker (message, presence,
//!   subscription operation, delivery notification, composing).
//! - [`xml`]: the small namespace-aware element tree the XML formats share.

pub mod address;
pub mod condition;
pub mod datetime;
pub mod event;
pub mod imdn;
pub mod iscomposing;
pub mod message;
pub mod presence;
pub mod xml;

pub use address::{Address, AddressError, Host, ImScheme, ImUri, Jid, SipUri};
pub use condition::{Condition, ErrorType};
pub use datetime::{Timestamp, TimestampError};
pub use message::{CpimError, CpimMessage};

/// Standard base64 (RFC 4648 §4, with padding), for carrying binary bodies in JSON.
pub fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 with padding; `None` when the text is not valid base64.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    }
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (i, chunk) in bytes.chunks(4).enumerate() {
        let last = i + 1 == bytes.len() / 4;
        let pad = chunk.iter().rev().take_while(|&&b| b == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | value(c)?;
        }
        n <<= 6 * pad as u32;
        let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&decoded[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc4648_10_base64_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (i, o) in cases {
            assert_eq!(super::base64_encode(i.as_bytes()), o);
            assert_eq!(super::base64_decode(o).unwrap_or_default(), i.as_bytes());
        }
    }

    #[test]
    fn base64_rejects_garbage() {
        for bad in ["Zg=", "Z===", "Zg==Zg==", "Zm9v!", "===="] {
            assert_eq!(super::base64_decode(bad), None, "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn prop_base64_round_trip(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100)) {
            proptest::prop_assert_eq!(super::base64_decode(&super::base64_encode(&bytes)), Some(bytes));
        }
    }
}
