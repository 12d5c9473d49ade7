//! `Content-Encoding` of received bodies (RFC 3261 §20.12): `gzip` and `deflate` are
//! decoded (Linphone deflates its IMDNs), `identity` is nothing; anything else gets
//! `415` with `Accept-Encoding` (RFC 3261 §21.4.13). Pure; [`crate::wire`] turns an
//! [`EncodingError`] into its response.

use miniz_oxide::inflate::{self, TINFLStatus};

use crate::headers;

/// What the gateway decodes, for `Accept-Encoding`.
pub const ACCEPT_ENCODING: &str = "gzip, deflate, identity";

/// Why a body could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodingError {
    /// A coding the gateway does not decode (`415` with `Accept-Encoding`).
    #[error("unsupported content coding")]
    Unsupported,
    /// The body is not what its coding says (`400`).
    #[error("{0}")]
    Corrupt(&'static str),
    /// Decoded, it would be larger than allowed (`413`).
    #[error("decoded body over the limit")]
    TooLarge,
}

/// The body of a request with `Content-Encoding: encodings` (the codings in the order
/// they were applied), decoded, at most `limit` bytes once decoded.
pub fn decode(encodings: &str, body: &[u8], limit: usize) -> Result<Vec<u8>, EncodingError> {
    let codings = headers::token_list(encodings);
    let mut out = body.to_vec();
    // Applied in the order listed, so undone from the last.
    for coding in codings.iter().rev() {
        out = match coding.to_ascii_lowercase().as_str() {
            "identity" => out,
            "deflate" => deflate(&out, limit)?,
            "gzip" | "x-gzip" => gzip(&out, limit)?,
            _ => return Err(EncodingError::Unsupported),
        };
    }
    Ok(out)
}

fn inflate_error(status: TINFLStatus) -> EncodingError {
    match status {
        TINFLStatus::HasMoreOutput => EncodingError::TooLarge,
        _ => EncodingError::Corrupt("body does not decode as its Content-Encoding"),
    }
}

/// `deflate` is the zlib format (RFC 1950) by HTTP's definition, but some senders
/// write bare deflate data (RFC 1951): a body without a valid zlib header is read as
/// the latter.
fn deflate(body: &[u8], limit: usize) -> Result<Vec<u8>, EncodingError> {
    let zlib_header = body.len() >= 2
        && body[0] & 0x0f == 8
        && (u16::from(body[0]) << 8 | u16::from(body[1])) % 31 == 0;
    let result = if zlib_header {
        inflate::decompress_to_vec_zlib_with_limit(body, limit)
    } else {
        inflate::decompress_to_vec_with_limit(body, limit)
    };
    result.map_err(|e| inflate_error(e.status))
}

/// The gzip member format (RFC 1952): a header, deflate data, CRC-32 and length. Only
/// the header is read here; the data's own end is what ends decoding.
fn gzip(body: &[u8], limit: usize) -> Result<Vec<u8>, EncodingError> {
    let bad = || EncodingError::Corrupt("not a gzip body");
    if body.len() < 18 || body[0] != 0x1f || body[1] != 0x8b || body[2] != 8 {
        return Err(bad());
    }
    let flags = body[3];
    let mut at = 10usize;
    if flags & 0x04 != 0 {
        // FEXTRA: a two-byte length, then that many bytes.
        let len = body.get(at..at + 2).ok_or_else(bad)?;
        at += 2 + usize::from(u16::from_le_bytes([len[0], len[1]]));
    }
    for flag in [0x08, 0x10] {
        // FNAME, FCOMMENT: zero-terminated.
        if flags & flag != 0 {
            let end = body.get(at..).ok_or_else(bad)?.iter().position(|b| *b == 0);
            at += end.ok_or_else(bad)? + 1;
        }
    }
    if flags & 0x02 != 0 {
        at += 2; // FHCRC
    }
    let data = body.get(at..body.len().saturating_sub(8)).ok_or_else(bad)?;
    let out =
        inflate::decompress_to_vec_with_limit(data, limit).map_err(|e| inflate_error(e.status))?;
    let trailer = &body[body.len() - 8..];
    let size = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]);
    if size != out.len() as u32 {
        return Err(bad());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::wire::Fault;
    use miniz_oxide::deflate::{compress_to_vec, compress_to_vec_zlib};

    const IMDN: &[u8] = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><imdn xmlns=\"urn:ietf:params:xml:ns:imdn\"><message-id>m1</message-id><datetime>2026-12-06T10:00:00Z</datetime><delivery-notification><status><delivered/></status></delivery-notification></imdn>";

    fn gzipped(data: &[u8], name: Option<&str>) -> Vec<u8> {
        let flags = if name.is_some() { 0x08 } else { 0 };
        let mut out = vec![0x1f, 0x8b, 8, flags, 0, 0, 0, 0, 0, 3];
        if let Some(name) = name {
            out.extend_from_slice(name.as_bytes());
            out.push(0);
        }
        out.extend(compress_to_vec(data, 6));
        // The CRC is not checked here; the length is.
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out
    }

    #[test]
    fn rfc3261_20_12_deflate_gzip_and_identity_are_decoded() {
        let limit = 1 << 20;
        assert_eq!(decode("identity", IMDN, limit).unwrap(), IMDN);
        assert_eq!(
            decode("deflate", &compress_to_vec_zlib(IMDN, 6), limit).unwrap(),
            IMDN
        );
        // Bare deflate data, as some stacks send it.
        assert_eq!(
            decode("Deflate", &compress_to_vec(IMDN, 6), limit).unwrap(),
            IMDN
        );
        assert_eq!(decode("gzip", &gzipped(IMDN, None), limit).unwrap(), IMDN);
        assert_eq!(
            decode("x-gzip", &gzipped(IMDN, Some("imdn.xml")), limit).unwrap(),
            IMDN
        );
        // Two codings, undone in reverse order.
        let twice = gzipped(&compress_to_vec_zlib(IMDN, 6), None);
        assert_eq!(decode("deflate, gzip", &twice, limit).unwrap(), IMDN);
    }

    #[test]
    fn rfc3261_21_4_13_unknown_corrupt_and_oversized_codings_are_refused() {
        let limit = 1 << 20;
        let unknown = Fault::from(decode("br", IMDN, limit).unwrap_err());
        assert_eq!(unknown.status, 415);
        assert_eq!(
            unknown.headers,
            vec![("Accept-Encoding".to_owned(), ACCEPT_ENCODING.to_owned())]
        );
        assert_eq!(
            Fault::from(decode("gzip", IMDN, limit).unwrap_err()).status,
            400
        );
        assert_eq!(
            Fault::from(decode("deflate", b"\xff\xff\xff", limit).unwrap_err()).status,
            400
        );
        let mut short = gzipped(IMDN, None);
        let n = short.len();
        short[n - 4] ^= 1;
        assert_eq!(
            Fault::from(decode("gzip", &short, limit).unwrap_err()).status,
            400
        );
        // A small body that inflates past the limit (a "zip bomb") is 413, not decoded.
        let bomb = compress_to_vec_zlib(&vec![b'a'; 4 << 20], 9);
        assert!(bomb.len() < 64 * 1024);
        assert_eq!(
            Fault::from(decode("deflate", &bomb, limit).unwrap_err()).status,
            413
        );
    }
}
