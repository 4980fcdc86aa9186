//! `PermissionQuery::parse`: never panics; errors are `INVALID_REQUEST` with a short message;
//! an accepted query prints as text that parses back to the same query, and holds when every
//! scope is held and fails when none is (queries have no negation).

use kms_core::{ErrorCode, PermissionQuery};

pub(crate) fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let query = match PermissionQuery::parse(&text) {
        Ok(q) => q,
        Err(e) => {
            assert_eq!(e.code(), ErrorCode::InvalidRequest, "{e}");
            // Messages quote the input cut short, so a huge input gives a small message.
            assert!(e.to_string().len() < 1024, "error message too long: {e}");
            return;
        }
    };
    let shown = query.to_string();
    let reparsed = PermissionQuery::parse(&shown).unwrap_or_else(|e| {
        panic!(
            "a {}-byte query displays as {} bytes that do not parse: {e}\ninput: {}\ndisplay: {}",
            text.len(),
            shown.len(),
            cut(&text),
            cut(&shown)
        )
    });
    assert_eq!(
        reparsed,
        query,
        "{} displays as {}",
        cut(&text),
        cut(&shown)
    );
    assert_eq!(reparsed.to_string(), shown);

    assert!(!query.scopes().is_empty());
    assert!(query.evaluate_with(&mut |_| true));
    assert!(!query.evaluate_with(&mut |_| false));
}

/// At most 200 characters of `s`, for messages.
fn cut(s: &str) -> String {
    let head: String = s.chars().take(200).collect();
    if head.len() < s.len() {
        format!("{head:?}...")
    } else {
        format!("{head:?}")
    }
}
