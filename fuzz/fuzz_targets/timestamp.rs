//! RFC 3339 timestamps: never panics; output is strict and parses to the same instant.
#![no_main]

use cpim::Timestamp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(t) = Timestamp::parse_lenient(s) {
        let strict = Timestamp::parse(&t.to_string()).expect("output is RFC 3339");
        assert_eq!(strict.unix_seconds(), t.unix_seconds());
    }
});
