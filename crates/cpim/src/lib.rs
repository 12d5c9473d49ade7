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
//! - [`xml`]: the small namespace-aware element tree the XML formats share.

pub mod address;
pub mod condition;
pub mod datetime;
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
        }
    }
}
