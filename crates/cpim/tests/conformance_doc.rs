//! The conformance matrix (docs/conformance.md) may only name tests that exist.

#![allow(clippy::disallowed_methods)] // tests wait with deadlines and measure

use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "target") {
                rust_files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn conformance_doc_names_existing_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let doc = fs::read_to_string(root.join("docs/conformance.md")).expect("docs/conformance.md");
    let mut sources = String::new();
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    for f in files {
        sources.push_str(&fs::read_to_string(f).expect("readable source"));
    }
    let names: Vec<&str> = doc
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.contains("::")
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b':')
        })
        .collect();
    assert!(names.len() > 100, "the matrix lists {} tests", names.len());
    let missing: Vec<&str> = names
        .iter()
        .filter(|n| {
            let f = n.rsplit("::").next().unwrap_or_default();
            // A test is a `fn NAME(` or a row `NAME: ...` of a table-test macro.
            !sources.contains(&format!("fn {f}(")) && !sources.contains(&format!(" {f}:"))
        })
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "docs/conformance.md names tests that do not exist: {missing:?}"
    );
}
