//! The SIP domains an X.509 certificate names (RFC 5922 §7.1) and whether it names one
//! (§7.2) — the pure part of checking a federating peer's TLS certificate.
//!
//! The identities are the `subjectAltName` entries: URIs of the `sip:` scheme without a
//! user part (`sip:example.com`) and `dNSName`s. A wildcard entry (`*.example.com`) names
//! nothing (§7.2: wildcards MUST NOT match), and the subject's CN is not used (a
//! certificate without a `subjectAltName` names no SIP domain). Comparison ignores ASCII
//! case and a final dot. The chain itself is checked by rustls/webpki; this module
//! only reads the names, with a small DER walker over the certificate.

/// The SIP domain identities of a certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectNames {
    /// `sip:` URI entries' hosts, lowercase.
    pub sip_uris: Vec<String>,
    /// `dNSName` entries, lowercase (wildcards kept as written, never matched).
    pub dns_names: Vec<String>,
}

/// A certificate that is not the DER this walker reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed certificate: {0}")]
pub struct CertificateError(&'static str);

impl SubjectNames {
    /// Whether the certificate names `domain` (RFC 5922 §7.2).
    pub fn names(&self, domain: &str) -> bool {
        let domain = normal(domain);
        if domain.is_empty() {
            return false;
        }
        self.sip_uris
            .iter()
            .chain(&self.dns_names)
            .any(|name| !name.contains('*') && normal(name) == domain)
    }

    /// Every identity, for messages.
    pub fn all(&self) -> Vec<String> {
        self.sip_uris
            .iter()
            .map(|d| format!("sip:{d}"))
            .chain(self.dns_names.iter().cloned())
            .collect()
    }
}

fn normal(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The SIP identities of the DER certificate `der`.
pub fn subject_names(der: &[u8]) -> Result<SubjectNames, CertificateError> {
    // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }
    let (certificate, _) = element(der, 0x30)?;
    let (tbs, _) = element(certificate, 0x30)?;
    // TBSCertificate ::= SEQUENCE { [0] version OPTIONAL, serial, signature, issuer,
    //   validity, subject, subjectPublicKeyInfo, [1] [2] OPTIONAL, [3] extensions }
    let mut rest = tbs;
    let mut names = SubjectNames::default();
    while !rest.is_empty() {
        let (tag, value, after) = any(rest)?;
        rest = after;
        if tag != 0xA3 {
            continue;
        }
        let (extensions, _) = element(value, 0x30)?;
        let mut list = extensions;
        while !list.is_empty() {
            let (extension, after) = element(list, 0x30)?;
            list = after;
            // Extension ::= SEQUENCE { extnID OID, critical BOOLEAN DEFAULT FALSE,
            //   extnValue OCTET STRING }
            let (oid, mut fields) = element(extension, 0x06)?;
            if oid != SUBJECT_ALT_NAME {
                continue;
            }
            let (tag, _, _) = any(fields)?;
            if tag == 0x01 {
                fields = any(fields)?.2;
            }
            let (octets, _) = element(fields, 0x04)?;
            let (general_names, _) = element(octets, 0x30)?;
            let mut entries = general_names;
            while !entries.is_empty() {
                let (tag, value, after) = any(entries)?;
                entries = after;
                let text = || {
                    std::str::from_utf8(value)
                        .map(str::to_ascii_lowercase)
                        .map_err(|_| CertificateError("a name that is not ASCII"))
                };
                match tag {
                    // [2] IMPLICIT IA5String dNSName
                    0x82 => names.dns_names.push(text()?),
                    // [6] IMPLICIT IA5String uniformResourceIdentifier
                    0x86 => {
                        let uri = text()?;
                        if let Some(host) = uri.strip_prefix("sip:") {
                            if !host.contains(['@', ';', '?', ':']) && !host.is_empty() {
                                names.sip_uris.push(host.to_owned());
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(names)
}

/// 2.5.29.17, DER-encoded.
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1D, 0x11];

/// One TLV with tag `tag`: its value and what follows.
fn element(input: &[u8], tag: u8) -> Result<(&[u8], &[u8]), CertificateError> {
    let (found, value, rest) = any(input)?;
    if found != tag {
        return Err(CertificateError("unexpected element"));
    }
    Ok((value, rest))
}

/// One TLV: its tag, value and what follows (definite lengths only, as DER has).
fn any(input: &[u8]) -> Result<(u8, &[u8], &[u8]), CertificateError> {
    let short = CertificateError("truncated element");
    let (&tag, rest) = input.split_first().ok_or(short.clone())?;
    if tag & 0x1F == 0x1F {
        return Err(CertificateError("a high tag number"));
    }
    let (&first, mut rest) = rest.split_first().ok_or(short.clone())?;
    let length = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7F);
        if count == 0 || count > 4 || rest.len() < count {
            return Err(CertificateError("a bad length"));
        }
        let (bytes, after) = rest.split_at(count);
        rest = after;
        bytes.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b))
    };
    if rest.len() < length {
        return Err(short);
    }
    let (value, after) = rest.split_at(length);
    Ok((tag, value, after))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;

    use super::*;

    fn names_of(pem: &str) -> SubjectNames {
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        subject_names(der.as_ref()).unwrap()
    }

    #[test]
    fn the_sip_identities_of_a_certificate() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            (
                include_str!("../tests/data/rfc5922/uri.pem"),
                &["carrier.test"],
                &["sip1.carrier.test"],
            ),
            (
                include_str!("../tests/data/rfc5922/dns.pem"),
                &[],
                &["carrier.test", "other.test"],
            ),
            (
                include_str!("../tests/data/rfc5922/wild.pem"),
                &[],
                &["*.carrier.test"],
            ),
            (include_str!("../tests/data/rfc5922/none.pem"), &[], &[]),
        ];
        for (pem, uris, dns) in cases {
            let names = names_of(pem);
            assert_eq!(names.sip_uris, *uris);
            assert_eq!(names.dns_names, *dns);
        }
    }

    #[test]
    fn rfc5922_7_2_which_domains_a_certificate_names() {
        let uri = names_of(include_str!("../tests/data/rfc5922/uri.pem"));
        let dns = names_of(include_str!("../tests/data/rfc5922/dns.pem"));
        let wild = names_of(include_str!("../tests/data/rfc5922/wild.pem"));
        let none = names_of(include_str!("../tests/data/rfc5922/none.pem"));
        let cases: &[(&SubjectNames, &str, bool)] = &[
            (&uri, "carrier.test", true),
            (&uri, "CARRIER.test.", true),
            (&uri, "sip1.carrier.test", true),
            (&uri, "other.test", false),
            (&dns, "carrier.test", true),
            (&dns, "other.test", true),
            (&dns, "sub.carrier.test", false),
            // No wildcards (RFC 5922 §7.2), no CN.
            (&wild, "sip1.carrier.test", false),
            (&wild, "*.carrier.test", false),
            (&none, "carrier.test", false),
            (&uri, "", false),
        ];
        for (names, domain, named) in cases {
            assert_eq!(names.names(domain), *named, "{domain} in {:?}", names.all());
        }
    }

    #[test]
    fn broken_der_is_an_error_not_a_panic() {
        let der = CertificateDer::from_pem_slice(
            include_str!("../tests/data/rfc5922/uri.pem").as_bytes(),
        )
        .unwrap();
        let bytes = der.as_ref();
        for cut in [0, 1, 2, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                subject_names(&bytes[..cut]).is_err() || cut == bytes.len(),
                "cut at {cut}"
            );
        }
        assert!(subject_names(&[0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF]).is_err());
        assert!(subject_names(&[0x1F, 0x00]).is_err());
    }
}
