//! `Scope::parse` and `RoleName::parse`: never panic; accepted names are kept verbatim,
//! survive a JSON round trip, and obey the hierarchy rules; JSON deserialization accepts
//! exactly what `parse` accepts.

use kms_core::{RoleName, Scope};

pub(crate) fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let as_json = serde_json::Value::String(text.to_string()).to_string();

    let scope = Scope::parse(&text);
    assert_eq!(
        scope.is_ok(),
        serde_json::from_str::<Scope>(&as_json).is_ok(),
        "parse and deserialize disagree on {text:?}"
    );
    assert_eq!(scope.is_ok(), Scope::parse_field(&text, "f").is_ok());
    if let Ok(scope) = scope {
        assert_eq!(scope.as_str(), text);
        assert!(scope.as_str().is_ascii());
        assert!(scope.covers(scope.as_str()));
        let round: Scope = serde_json::to_string(&scope)
            .ok()
            .and_then(|j| serde_json::from_str(&j).ok())
            .expect("a valid scope survives a JSON round trip");
        assert_eq!(round, scope);
        for ancestor in Scope::ancestors(scope.as_str()) {
            let a = Scope::parse(ancestor);
            assert!(
                a.is_ok(),
                "ancestor {ancestor:?} of {text:?} is not a scope"
            );
            assert!(a.is_ok_and(|a| a.covers(scope.as_str()) && !scope.covers(ancestor)));
        }
        // A sibling that merely shares the text as a prefix is not covered.
        assert!(!scope.covers(&format!("{text}x")));
    } else if let Some(err) = scope.err() {
        assert!(!err.to_string().is_empty());
    }

    let role = RoleName::parse(&text);
    assert_eq!(
        role.is_ok(),
        serde_json::from_str::<RoleName>(&as_json).is_ok(),
        "parse and deserialize disagree on role {text:?}"
    );
    if let Ok(role) = role {
        assert_eq!(role.as_str(), text);
        assert!((1..=64).contains(&role.as_str().len()));
    } else if let Some(err) = role.err() {
        // Error messages quote the input cut short, so they stay small.
        assert!(err.to_string().len() < 1024, "error message too long");
    }
}
