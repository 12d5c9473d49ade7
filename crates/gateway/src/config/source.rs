//! Positions in the configuration text: byte offsets to line and column, and the key path
//! (`adapters.sip.listen[1].address`) at a position or the position of a key path.

use std::fmt;
use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

pub(crate) use cpim_broker::config::{Finding, KeyPath, Segment};

/// A 1-based line and column (counted in characters) in the configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// The line, starting at 1.
    pub line: usize,
    /// The column, starting at 1, in characters.
    pub column: usize,
}

impl Location {
    /// The location of byte `offset` in `text` (clamped to the text's length).
    pub fn of_offset(text: &str, offset: usize) -> Location {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
        Location {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// The deepest key path whose key or value contains byte `offset`.
pub(crate) fn path_at(document: &Spanned<DeTable<'_>>, offset: usize) -> Option<KeyPath> {
    let mut best = None;
    visit_table(document.get_ref(), offset, &KeyPath::root(), &mut best);
    best
}

fn consider(path: &KeyPath, best: &mut Option<KeyPath>) {
    if best.as_ref().is_none_or(|best| path.depth() > best.depth()) {
        *best = Some(path.clone());
    }
}

fn visit_table(table: &DeTable<'_>, offset: usize, path: &KeyPath, best: &mut Option<KeyPath>) {
    for (key, value) in table {
        let path = path.key(key.get_ref());
        if key.span().contains(&offset) || value.span().contains(&offset) {
            consider(&path, best);
        }
        visit_value(value.get_ref(), offset, &path, best);
    }
}

fn visit_value(value: &DeValue<'_>, offset: usize, path: &KeyPath, best: &mut Option<KeyPath>) {
    match value {
        DeValue::Table(table) => visit_table(table, offset, path, best),
        DeValue::Array(array) => {
            for (index, item) in array.iter().enumerate() {
                let path = path.index(index);
                if item.span().contains(&offset) {
                    consider(&path, best);
                }
                visit_value(item.get_ref(), offset, &path, best);
            }
        }
        _ => {}
    }
}

/// The span that best shows `path`: the key of a table, the value of anything else; for a
/// path that is not in the document (a key left to its default), its deepest present ancestor.
pub(crate) fn span_of(document: &Spanned<DeTable<'_>>, path: &KeyPath) -> Option<Range<usize>> {
    let mut table = Some(document.get_ref());
    let mut array: Option<&[Spanned<DeValue<'_>>]> = None;
    let mut span = None;
    for segment in path.segments() {
        let (key_span, value) = match (segment, table, array) {
            (Segment::Key(key), Some(current), _) => match current.get_key_value(key.as_str()) {
                Some((key, value)) => (Some(key.span()), value),
                None => break,
            },
            (Segment::Index(index), _, Some(current)) => match current.get(*index) {
                Some(value) => (None, value),
                None => break,
            },
            _ => break,
        };
        span = match (value.get_ref(), key_span) {
            (DeValue::Table(_), Some(key_span)) => Some(key_span),
            _ => Some(value.span()),
        };
        table = value.get_ref().as_table();
        array = match value.get_ref() {
            DeValue::Array(items) => Some(&items[..]),
            _ => None,
        };
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[gateway]\nmax_hops = 3\n\n[adapters.sip]\ntype = \"sip\"\n\
                        domains = [\"a.b\", \"ç.d\"]\n";

    fn document() -> Spanned<DeTable<'static>> {
        DeTable::parse(TEXT).expect("test document parses")
    }

    #[test]
    fn offsets_become_lines_and_columns() {
        assert_eq!(
            Location::of_offset(TEXT, 0),
            Location { line: 1, column: 1 }
        );
        let offset = TEXT.find("max_hops").expect("present");
        assert_eq!(
            Location::of_offset(TEXT, offset),
            Location { line: 2, column: 1 }
        );
        let offset = TEXT.find("3\n").expect("present");
        assert_eq!(
            Location::of_offset(TEXT, offset),
            Location {
                line: 2,
                column: 12
            }
        );
        // Columns count characters, not bytes.
        let offset = TEXT.find(".d").expect("present");
        assert_eq!(
            Location::of_offset(TEXT, offset),
            Location {
                line: 6,
                column: 21
            }
        );
    }

    #[test]
    fn path_at_finds_the_deepest_key() {
        let document = document();
        let offset = TEXT.find("\"ç.d\"").expect("present");
        let path = path_at(&document, offset).expect("inside a value");
        assert_eq!(path.to_string(), "adapters.sip.domains[1]");
        let offset = TEXT.find("max_hops").expect("present");
        let path = path_at(&document, offset).expect("inside a key");
        assert_eq!(path.to_string(), "gateway.max_hops");
    }

    #[test]
    fn span_of_a_path_points_at_its_value() {
        let document = document();
        let path = KeyPath::root()
            .key("adapters")
            .key("sip")
            .key("domains")
            .index(1);
        let span = span_of(&document, &path).expect("present");
        assert_eq!(&TEXT[span], "\"ç.d\"");
        let missing = KeyPath::root().key("adapters").key("sip").key("listen");
        let span = span_of(&document, &missing).expect("ancestor present");
        assert_eq!(&TEXT[span], "sip");
    }

    #[test]
    fn non_bare_keys_are_quoted() {
        let path = KeyPath::root().key("adapters").key("a.b").index(0);
        assert_eq!(path.to_string(), "adapters.\"a.b\"[0]");
    }
}
