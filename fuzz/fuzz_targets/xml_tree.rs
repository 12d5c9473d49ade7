//! The XML element tree: never panics; output parses to the same tree.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = cpim::xml::parse(data) {
        let out = e.to_document();
        assert_eq!(cpim::xml::parse(out.as_bytes()).expect("our output must parse"), e);
    }
});
