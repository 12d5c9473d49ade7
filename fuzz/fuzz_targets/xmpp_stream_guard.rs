//! The component stream's guard: never panics, gives the same result however the bytes
//! are split into reads, and lets through only stanzas within the limits (depth, width,
//! size), each whole. Deep and wide inputs are what it is for: seed the corpus with
//! `<a><a><a>…` and `<x a0='' a1='' …/>`.
#![no_main]

use cpim_xmpp::guard::{check_document, Guard, Limits};
use libfuzzer_sys::fuzz_target;

const HEADER: &[u8] = b"<stream:stream>";

fn run(limits: Limits, chunks: &[&[u8]]) -> (Vec<u8>, usize, bool) {
    let mut guard = Guard::new(limits);
    let mut out = Vec::new();
    let mut refused = Vec::new();
    for chunk in chunks {
        if guard.feed(chunk, &mut out, &mut refused).is_err() {
            return (out, refused.len(), false);
        }
    }
    (out, refused.len(), true)
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, body)) = data.split_first() else { return };
    let limits = Limits {
        max_depth: 8,
        max_elements: 64,
        max_attributes: 8,
        max_stanza_bytes: 512,
    };
    let split = usize::from(split).min(body.len());
    let whole = run(limits, &[HEADER, body]);
    let parts = run(limits, &[HEADER, &body[..split], &body[split..]]);
    assert_eq!(whole, parts, "the result depends on how the bytes were read");
    let _ = check_document(body, limits);
    // What went through nests no deeper than the stream plus the limit.
    let (out, _, _) = whole;
    let mut depth: usize = 0;
    let mut max: usize = 0;
    let mut i = 0;
    while i + 1 < out.len() {
        if out[i] == b'<' && out[i + 1] != b'/' && out[i + 1] != b'!' && out[i + 1] != b'?' {
            depth += 1;
            max = max.max(depth);
        }
        if out[i] == b'<' && out[i + 1] == b'/' {
            depth = depth.saturating_sub(1);
        }
        if out[i] == b'/' && out[i + 1] == b'>' {
            depth = depth.saturating_sub(1);
        }
        i += 1;
    }
    // A rough count (it also sees `<` in CDATA): only an upper bound is asserted when no
    // CDATA is present.
    if !out.windows(3).any(|w| w == b"<![") && !out.contains(&b'"') && !out.contains(&b'\'') {
        assert!(max <= limits.max_depth + 1, "{max} levels went through");
    }
});
