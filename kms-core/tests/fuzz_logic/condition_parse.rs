//! `Condition::parse`: never panics; an error's position lies within the input; a parsed
//! condition evaluates without panicking on an empty and on a full input, and a condition
//! that refers to the context is false when the context is empty (missing data never
//! grants).

use kms_core::{Condition, ConditionInput, ConditionLimits, Timestamp};

pub(crate) fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let limits = ConditionLimits::default();
    let condition = match Condition::parse(&text, &limits) {
        Ok(c) => c,
        Err(e) => {
            assert!(
                e.position <= text.len().max(limits.max_length),
                "position {} past the input ({} bytes)",
                e.position,
                text.len()
            );
            assert!(e.to_string().len() < 1024, "error message too long: {e}");
            return;
        }
    };
    assert_eq!(condition.as_str(), text);
    let empty = serde_json::Map::new();
    let mut full = serde_json::Map::new();
    for key in condition.context_keys() {
        full.insert(key, serde_json::json!("x"));
    }
    let none = ConditionInput {
        context: &empty,
        metadata: &empty,
        ip: None,
        now: Timestamp::from_unix(1_796_121_000),
    };
    if !condition.context_keys().is_empty() {
        assert!(
            !condition.holds(&none),
            "granted on missing context: {text}"
        );
    }
    let _ = condition.holds(&ConditionInput {
        context: &full,
        metadata: &full,
        ip: Some(std::net::IpAddr::from([10, 0, 0, 1])),
        now: Timestamp::from_unix(-62_135_596_800),
    });
}
