//! IMDN bodies and Disposition-Notification values: never panic; round trip.
#![no_main]

use cpim::imdn::{DispositionRequest, Imdn};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(i) = Imdn::parse(data) {
        let xml = i.to_xml();
        assert_eq!(Imdn::parse(xml.as_bytes()).expect("our output must parse"), i);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(d) = DispositionRequest::parse(s) {
            assert_eq!(DispositionRequest::parse(&d.to_string()).expect("reparse"), d);
        }
    }
});
