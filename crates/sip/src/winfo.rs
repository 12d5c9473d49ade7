//! Watcher information for SIP users (RFC 3857 `presence.winfo`, RFC 3858
//! `application/watcherinfo+xml`): who asks to see a SIP user's presence, for the SIP
//! user itself. It is where a phone shows "bob wants to see your status", which under
//! the `contacts` policy is answered by adding bob as a contact (the phone's SUBSCRIBE to
//! bob approves him, see [`crate::authorization`]). Pure: documents from state.
//!
//! Every NOTIFY carries the full state (`state="full"`, RFC 3858 §4.2), its `version`
//! counting the NOTIFYs of that subscription from 0.

use std::fmt::Write as _;

/// The content type of a watcher-information document.
pub const WATCHERINFO: &str = "application/watcherinfo+xml";

/// The event package.
pub const PACKAGE: &str = "presence.winfo";

/// A watcher's state in the list (RFC 3858 §5.2 `status`, with the `event` that led to
/// it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// Waits for the user's decision (`pending`, event `subscribe`).
    Pending,
    /// Approved (`active`, event `approved`).
    Active,
    /// Refused (`terminated`, event `rejected`).
    Rejected,
}

impl Status {
    fn attributes(self) -> (&'static str, &'static str) {
        match self {
            Status::Pending => ("pending", "subscribe"),
            Status::Active => ("active", "approved"),
            Status::Rejected => ("terminated", "rejected"),
        }
    }
}

/// The full-state document for `resource` (the SIP user's URI): its watchers with their
/// state, as the `version`th document of the subscription.
pub fn document(resource: &str, version: u32, watchers: &[(String, Status)]) -> Vec<u8> {
    let mut xml = String::from("<?xml version=\"1.0\"?>\n");
    let _ = write!(
        xml,
        "<watcherinfo xmlns=\"urn:ietf:params:xml:ns:watcherinfo\" version=\"{version}\" state=\"full\">\n  <watcher-list resource=\"{}\" package=\"presence\">\n",
        escape(resource)
    );
    for (uri, status) in watchers {
        let (status, event) = status.attributes();
        let _ = writeln!(
            xml,
            "    <watcher id=\"{}\" status=\"{status}\" event=\"{event}\">{}</watcher>",
            watcher_id(uri),
            escape(uri)
        );
    }
    xml.push_str("  </watcher-list>\n</watcherinfo>\n");
    xml.into_bytes()
}

/// Whether an `Accept` header (absent: yes, RFC 3857 §5.1.1 default) takes watcher
/// information documents.
pub fn accepts(accept: Option<&str>) -> bool {
    let Some(accept) = accept else {
        return true;
    };
    accept.split(',').any(|range| {
        let media = range
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        media == WATCHERINFO || media == "application/*" || media == "*/*"
    })
}

/// A stable `id` for a watcher (RFC 3858 §5.2: unique within the list): the FNV-1a hash
/// of its URI, lower-cased.
fn watcher_id(uri: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in uri.to_ascii_lowercase().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("w{hash:016x}")
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3858_full_state_document_lists_each_watcher_with_its_status() {
        let doc = document(
            "sip:carol@sip.test",
            2,
            &[
                ("sip:bob@mem.test".to_owned(), Status::Pending),
                ("sip:erin@mem.test".to_owned(), Status::Active),
                ("sip:x&y@mem.test".to_owned(), Status::Rejected),
            ],
        );
        let doc = String::from_utf8(doc).expect("UTF-8");
        for part in [
            "<watcherinfo xmlns=\"urn:ietf:params:xml:ns:watcherinfo\" version=\"2\" state=\"full\">",
            "<watcher-list resource=\"sip:carol@sip.test\" package=\"presence\">",
            "status=\"pending\" event=\"subscribe\">sip:bob@mem.test</watcher>",
            "status=\"active\" event=\"approved\">sip:erin@mem.test</watcher>",
            "status=\"terminated\" event=\"rejected\">sip:x&amp;y@mem.test</watcher>",
        ] {
            assert!(doc.contains(part), "{part} missing in {doc}");
        }
        // The ids are unique and stable.
        let ids: Vec<&str> = doc
            .match_indices(" id=\"")
            .map(|(i, _)| &doc[i + 5..i + 22])
            .collect();
        assert_eq!(ids.len(), 3);
        assert!(ids[0] != ids[1] && ids[1] != ids[2]);
        assert_eq!(
            watcher_id("sip:Bob@mem.test"),
            watcher_id("sip:bob@mem.test")
        );
        // An empty list is still a valid document.
        let empty = String::from_utf8(document("sip:carol@sip.test", 0, &[])).expect("UTF-8");
        assert!(empty.contains("version=\"0\"") && empty.contains("</watcher-list>"));
    }

    #[test]
    fn rfc3857_accept_defaults_to_watcherinfo() {
        for (accept, ok) in [
            (None, true),
            (Some("application/watcherinfo+xml"), true),
            (
                Some("application/pidf+xml, Application/WatcherInfo+XML;q=0.5"),
                true,
            ),
            (Some("*/*"), true),
            (Some("application/pidf+xml"), false),
            (Some("text/plain"), false),
        ] {
            assert_eq!(accepts(accept), ok, "{accept:?}");
        }
    }
}
