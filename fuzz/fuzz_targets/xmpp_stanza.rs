//! XMPP stanzas as the component receives them: translation into broker submissions and
//! the error reply never panic, whatever the stanza. As on the stream, the guard's limits
//! come first (a deep tree overflows the stack of the parser's callers).
#![no_main]

use cpim_xmpp::translate::{classify, error_reply, inbound, StanzaFault};
use libfuzzer_sys::fuzz_target;
use minidom::Element;

fuzz_target!(|data: &[u8]| {
    if cpim_xmpp::guard::check_document(data, cpim_xmpp::guard::Limits::default()).is_err() {
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(stanza) = text.parse::<Element>() else { return };
    let _ = classify(&stanza);
    match inbound(&stanza, 0) {
        Ok(items) => {
            for item in items {
                let _ = format!("{item:?}");
            }
        }
        Err(fault) => {
            let _ = error_reply(&stanza, &fault);
        }
    }
    let _ = error_reply(&stanza, &StanzaFault::new(cpim::Condition::BadRequest, "x"));
});
