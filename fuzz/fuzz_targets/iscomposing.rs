//! RFC 3994 is-composing documents: never panic; round trip.
#![no_main]

use cpim::iscomposing::IsComposing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = IsComposing::parse(data) {
        let xml = c.to_xml();
        assert_eq!(IsComposing::parse(xml.as_bytes()).expect("our output must parse"), c);
    }
});
