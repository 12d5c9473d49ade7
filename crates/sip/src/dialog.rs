//! Where a dialog's requests go (RFC 3261 §12): the route set and the remote target as
//! pure data, and the Request-URI, `Route` headers and next hop of an in-dialog request
//! built from them (§12.2.1.1, loose and strict routing). No sockets: the driver
//! resolves the next hop.

use crate::headers::{split_top_level, NameAddr};

/// The `Record-Route` values of a message, one entry each, in the order written
/// (several may share a header line, comma-separated).
pub fn record_route(headers: &[(String, String)]) -> Vec<String> {
    headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("Record-Route"))
        .flat_map(|(_, value)| split_top_level(value, ','))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

/// The URI of a `Contact` value (its first entry), or `None` when there is none or it
/// is `*`.
pub fn contact_uri(value: Option<&str>) -> Option<String> {
    let value = value?;
    let first = split_top_level(value, ',').into_iter().next()?.trim();
    if first.is_empty() || first == "*" {
        return None;
    }
    NameAddr::parse("Contact", first)
        .ok()
        .map(|c| c.uri)
        .filter(|u| !u.is_empty())
}

/// An in-dialog request's addressing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InDialog {
    /// The Request-URI.
    pub request_uri: String,
    /// The `Route` header values, in order.
    pub routes: Vec<String>,
    /// The URI the request is sent to (the first route, else the remote target).
    pub next_hop: String,
}

/// RFC 3261 §12.2.1.1: the Request-URI and `Route` headers of a request to
/// `remote_target` in a dialog whose route set is `route_set` (the UAC's order).
/// A first route with `lr` is loose: the Request-URI stays the remote target. A strict
/// router's URI becomes the Request-URI and the remote target the last route.
pub fn in_dialog(remote_target: &str, route_set: &[String]) -> InDialog {
    let Some(first) = route_set.first() else {
        return InDialog {
            request_uri: remote_target.to_owned(),
            routes: Vec::new(),
            next_hop: remote_target.to_owned(),
        };
    };
    let first_uri = route_uri(first);
    if is_loose(&first_uri) {
        return InDialog {
            request_uri: remote_target.to_owned(),
            routes: route_set.to_vec(),
            next_hop: first_uri,
        };
    }
    let mut routes: Vec<String> = route_set[1..].to_vec();
    routes.push(format!("<{remote_target}>"));
    InDialog {
        request_uri: strip_forbidden_params(&first_uri),
        routes,
        next_hop: first_uri,
    }
}

/// The URI of one route entry (`<uri>;params` or a bare URI).
pub fn route_uri(entry: &str) -> String {
    NameAddr::parse("Route", entry)
        .map(|n| n.uri)
        .unwrap_or_else(|_| entry.trim().to_owned())
}

fn is_loose(uri: &str) -> bool {
    uri.split(';').skip(1).any(|p| {
        p.split('=')
            .next()
            .unwrap_or_default()
            .trim()
            .eq_ignore_ascii_case("lr")
    })
}

/// RFC 3261 §12.2.1.1 and Table 1 of §19.1.1: a strict route's URI becomes the
/// Request-URI without the URI headers, which a Request-URI may not carry.
fn strip_forbidden_params(uri: &str) -> String {
    uri.split('?').next().unwrap_or(uri).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3261_12_2_1_1_in_dialog_request_addressing() {
        let target = "sip:carol@192.0.2.4:5070";
        // (route set, Request-URI, Route headers, next hop)
        let cases: &[(&[&str], &str, &[&str], &str)] = &[
            (&[], target, &[], target),
            (
                &["<sip:p1.example;lr>", "<sip:p2.example;lr>"],
                target,
                &["<sip:p1.example;lr>", "<sip:p2.example;lr>"],
                "sip:p1.example;lr",
            ),
            (
                &["<sip:10.0.0.1:5060;lr;ftag=abc>"],
                target,
                &["<sip:10.0.0.1:5060;lr;ftag=abc>"],
                "sip:10.0.0.1:5060;lr;ftag=abc",
            ),
            // A strict router: its URI is the Request-URI, the target the last route.
            (
                &["<sip:strict.example>", "<sip:p2.example;lr>"],
                "sip:strict.example",
                &["<sip:p2.example;lr>", "<sip:carol@192.0.2.4:5070>"],
                "sip:strict.example",
            ),
        ];
        for (set, uri, routes, hop) in cases {
            let set: Vec<String> = set.iter().map(|s| (*s).to_owned()).collect();
            let got = in_dialog(target, &set);
            assert_eq!(got.request_uri, *uri, "{set:?}");
            assert_eq!(got.routes, *routes, "{set:?}");
            assert_eq!(got.next_hop, *hop, "{set:?}");
        }
    }

    #[test]
    fn rfc3261_12_1_record_route_entries_in_order() {
        let headers = vec![
            ("Via".to_owned(), "SIP/2.0/UDP a".to_owned()),
            (
                "Record-Route".to_owned(),
                "<sip:p1.example;lr>, \"x, y\" <sip:p2.example;lr>".to_owned(),
            ),
            ("record-route".to_owned(), "<sip:p3.example;lr>".to_owned()),
        ];
        assert_eq!(
            record_route(&headers),
            [
                "<sip:p1.example;lr>",
                "\"x, y\" <sip:p2.example;lr>",
                "<sip:p3.example;lr>"
            ]
        );
        assert_eq!(
            contact_uri(Some(
                "<sip:a@192.0.2.1:5060;transport=tcp>;expires=60, <sip:b@x>"
            )),
            Some("sip:a@192.0.2.1:5060;transport=tcp".to_owned())
        );
        assert_eq!(contact_uri(Some("*")), None);
        assert_eq!(contact_uri(None), None);
    }
}
