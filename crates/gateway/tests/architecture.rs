//! The house rules of `docs/architecture.md` that a test can check on the sources:
//! no import cycle between the modules of a crate, and no source file over 1000 lines
//! before its tests without a one-line reason (`//! Size: …`) at its top. (Reading the
//! clock only in drivers is checked by clippy: `clippy.toml`.)

#![allow(clippy::disallowed_methods)] // tests wait with deadlines and measure

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Where the crates are.
fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crates/")
        .to_path_buf()
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a source file relative to its crate's `src/`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).expect("under src/");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The code of a file before its tests, without comments (a line with a string keeps
/// everything: a URL is not a comment).
fn code_before_tests(text: &str) -> String {
    let mut code = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") {
            continue;
        }
        let line = if line.contains('"') {
            line
        } else {
            line.split("//").next().unwrap_or_default()
        };
        code.push_str(line);
        code.push('\n');
    }
    code
}

/// The module paths a piece of code names: `crate::a::b…`, and `super::a…` resolved
/// against `here`.
fn references(code: &str, here: &[String]) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for (prefix, base) in [
        ("crate::", Vec::new()),
        // `super` of module `a::b` (`a/b.rs` or `a/b/mod.rs`) is `a`.
        ("super::", here[..here.len().saturating_sub(1)].to_vec()),
    ] {
        let mut rest = code;
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().last();
            rest = &rest[at + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let mut path = base.clone();
            let mut tail = rest;
            loop {
                let end = tail
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                if end == 0 {
                    break;
                }
                path.push(tail[..end].to_owned());
                tail = &tail[end..];
                match tail.strip_prefix("::") {
                    Some(t) => tail = t,
                    None => break,
                }
            }
            found.push(path);
        }
    }
    found
}

#[test]
fn no_import_cycle_between_the_modules_of_a_crate() {
    let mut cycles = Vec::new();
    for entry in fs::read_dir(crates_dir()).expect("crates/").flatten() {
        let src = entry.path().join("src");
        if !src.is_dir() {
            continue;
        }
        let mut files = Vec::new();
        sources(&src, &mut files);
        let modules: BTreeMap<Vec<String>, PathBuf> = files
            .iter()
            .map(|f| (module_path(&src, f), f.clone()))
            .collect();
        // Edges between siblings (children of one parent), from every reference that
        // is not to an ancestor or a descendant.
        let mut edges: BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
        for (here, file) in &modules {
            let text = fs::read_to_string(file).expect("read");
            for target in references(&code_before_tests(&text), here) {
                let known = (0..=target.len())
                    .rev()
                    .map(|n| target[..n].to_vec())
                    .find(|p| modules.contains_key(p));
                let Some(there) = known else { continue };
                let common = here.iter().zip(&there).take_while(|(a, b)| a == b).count();
                if common == here.len() || common == there.len() {
                    continue; // an ancestor or a descendant
                }
                edges
                    .entry(here[..common].to_vec())
                    .or_default()
                    .entry(here[common].clone())
                    .or_default()
                    .insert(there[common].clone());
            }
        }
        for (parent, graph) in &edges {
            if let Some(cycle) = find_cycle(graph) {
                cycles.push(format!(
                    "{} ({}): {}",
                    entry.file_name().to_string_lossy(),
                    if parent.is_empty() {
                        "crate root".to_owned()
                    } else {
                        parent.join("::")
                    },
                    cycle.join(" -> ")
                ));
            }
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

/// A cycle in `graph`, if there is one, as the path around it.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, graph, &mut Vec::new(), &mut done) {
            return Some(cycle);
        }
    }
    None
}

#[test]
fn no_source_file_is_over_a_thousand_lines_before_its_tests_without_a_reason() {
    let mut long = Vec::new();
    for entry in fs::read_dir(crates_dir()).expect("crates/").flatten() {
        let mut files = Vec::new();
        sources(&entry.path().join("src"), &mut files);
        for file in files {
            let text = fs::read_to_string(&file).expect("read");
            let before_tests = text
                .lines()
                .take_while(|l| !l.trim_start().starts_with("#[cfg(test)]"))
                .count();
            let reason = text
                .lines()
                .take_while(|l| l.starts_with("//!"))
                .any(|l| l.starts_with("//! Size: "));
            if before_tests > 1000 && !reason {
                long.push(format!("{} ({before_tests} lines)", file.display()));
            }
        }
    }
    assert!(
        long.is_empty(),
        "split these, or give the reason at the top (`//! Size: …`):\n{}",
        long.join("\n")
    );
}

/// The checks themselves find what they look for.
#[test]
fn the_checks_see_a_cycle_and_resolve_paths() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_owned(), BTreeSet::from(["b".to_owned()])),
        ("b".to_owned(), BTreeSet::from(["c".to_owned()])),
        ("c".to_owned(), BTreeSet::from(["a".to_owned()])),
    ]
    .into();
    assert_eq!(
        find_cycle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    let acyclic: BTreeMap<String, BTreeSet<String>> =
        [("a".to_owned(), BTreeSet::from(["b".to_owned()]))].into();
    assert_eq!(find_cycle(&acyclic), None);
    let here = vec!["driver".to_owned(), "mesh".to_owned()];
    let code = code_before_tests(
        "use crate::confirm::{own_id, IdKind};\n// crate::nope::x\nuse super::{Link, Outgoing};\nlet s = \"http://x\"; other_crate::a;\n#[cfg(test)]\nuse crate::tests_only;\n",
    );
    let refs = references(&code, &here);
    assert!(refs.contains(&vec!["confirm".to_owned()]), "{refs:?}");
    // `super::{…}` names the parent itself.
    assert!(refs.contains(&vec!["driver".to_owned()]), "{refs:?}");
    assert!(
        !refs
            .iter()
            .any(|r| r.first().is_some_and(|s| s == "nope" || s == "tests_only")),
        "{refs:?}"
    );
}
