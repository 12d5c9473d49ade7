//! PIDF presence: parsing (strict and lenient) never panics; an accepted document
//! serializes to XML that parses to the same model, and serializing is stable.
#![no_main]

use cpim::presence::Presence;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for parse in [Presence::parse, Presence::parse_lenient] {
        if let Ok(p) = parse(data) {
            let xml = p.to_xml();
            let again = Presence::parse(xml.as_bytes()).expect("our output must parse");
            assert_eq!(again, p);
            assert_eq!(again.to_xml(), xml);
        }
    }
});
