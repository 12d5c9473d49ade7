//! Received SIP bytes through the SIP adapter's front end: framing, strict header
//! reading, the response writer and the MESSAGE translation never panic; stream framing
//! always makes progress and hands out whole messages.
#![no_main]

use cpim_sip::transport::{next_stream_message, StreamFrame};
use cpim_sip::wire::{check_request, frame, response, Framed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let raw = match frame(data) {
        Framed::Message(m) => Some(m),
        Framed::Bad(_, m) => m,
    };
    if let Some(raw) = raw {
        let _ = response(&raw, 400, "Bad Request", Some("t"), &[], None);
        if raw.is_request {
            if let Ok(view) = check_request(&raw, true) {
                let _ = cpim_sip::translate::message_inbound(&view, 0);
            }
        }
    }
    let mut buf = data.to_vec();
    loop {
        let before = buf.len();
        match next_stream_message(&mut buf) {
            StreamFrame::Incomplete => break,
            StreamFrame::Message(m) => {
                assert!(buf.len() < before, "framing must make progress");
                assert!(m.windows(4).any(|w| w == b"\r\n\r\n"), "a whole message");
            }
            StreamFrame::Ping | StreamFrame::Broken(..) => {
                assert!(buf.len() < before, "framing must make progress");
            }
        }
    }
});
