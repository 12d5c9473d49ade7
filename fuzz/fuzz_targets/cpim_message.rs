//! message/cpim: parsing never panics; an accepted message serializes back to its input
//! unchanged, and its strict form parses to the same model.
#![no_main]

use cpim::CpimMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = CpimMessage::parse(data) {
        assert_eq!(m.to_bytes(), data);
        let strict = m.to_strict_bytes();
        let again = CpimMessage::parse(&strict).expect("strict output must parse");
        assert_eq!(again, m);
        assert_eq!(again.to_strict_bytes(), strict);
        let _ = (m.from(), m.to(), m.cc(), m.datetime(), m.subjects(), m.required());
    }
});
