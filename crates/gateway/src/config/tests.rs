//! Unit tests of the loader's internals; the behaviour is tested in `tests/config.rs`.

use super::*;

#[test]
fn problem_renders_file_line_column_key_message_and_hint() {
    let problem = Problem {
        location: Some(Location {
            line: 12,
            column: 1,
        }),
        key: Some("adapters.sip.listn".to_owned()),
        message: "unknown field `listn`".to_owned(),
        hint: Some("check the spelling".to_owned()),
    };
    let error = ConfigError::Invalid {
        path: PathBuf::from("gateway.toml"),
        problems: vec![problem.clone(), problem],
    };
    let expected = "gateway.toml:12:1: adapters.sip.listn: unknown field `listn`\n  \
                    hint: check the spelling";
    assert_eq!(error.to_string(), format!("{expected}\n{expected}"));
}

#[test]
fn problem_without_location_or_key_renders_the_file() {
    let error = ConfigError::Invalid {
        path: PathBuf::from("g.toml"),
        problems: vec![Problem {
            location: None,
            key: None,
            message: "broken".to_owned(),
            hint: None,
        }],
    };
    assert_eq!(error.to_string(), "g.toml: broken");
}

#[test]
fn hints_match_the_kind_of_error() {
    assert!(hint_for("unknown field `x`, expected `y`").starts_with("check the spelling"));
    assert!(hint_for("missing field `type`").contains("type = \"sip\""));
    assert!(hint_for("missing field `server`").starts_with("add `server = ...`"));
    assert!(hint_for("unknown variant `x`, expected `y`").starts_with("use one of"));
    assert!(hint_for("environment variable X is not set").contains("${VAR:-default}"));
    assert!(hint_for("invalid type: integer `3`, expected a string").contains("type"));
    assert_eq!(hint_for("something else"), "see docs/configuration.md");
}

#[test]
fn adapter_tables_are_read_without_their_type_key() {
    let text = "[adapters.w]\ntype = \"webhook\"\nlisten = \"127.0.0.1:1\"\n\
                [[adapters.w.apps]]\nname = \"a\"\ndomains = [\"a.b\"]\ntoken = \"t\"\n";
    let document = DeTable::parse(text).expect("valid TOML");
    let config = deserialize(&document).expect("valid config");
    assert_eq!(
        config.adapters.get("w").map(AdapterConfig::kind),
        Some(AdapterKind::Webhook)
    );
}
