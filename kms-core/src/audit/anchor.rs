//! The audit anchor: after retention prunes the oldest events, the newest pruned one
//! (`<seq>:<hash>`, kept as store metadata) is where verification of the rest starts.
//! Its format lives here only; stores write it with [`anchor_value`].

/// The metadata key holding the audit anchor: `<seq>:<hash>` of the newest pruned event.
pub const AUDIT_ANCHOR_KEY: &str = "audit_anchor";

/// The anchor value for the newest pruned event, `seq` with `hash`.
pub fn anchor_value(seq: u64, hash: &str) -> String {
    format!("{seq}:{hash}")
}

/// The `(seq, hash)` of an anchor value; `None` when it is not one.
pub(crate) fn parse_anchor(anchor: &str) -> Option<(u64, &str)> {
    let (seq, hash) = anchor.split_once(':')?;
    Some((seq.parse().ok()?, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_anchor_value_parses_back() {
        assert_eq!(parse_anchor(&anchor_value(42, "ab12")), Some((42, "ab12")));
        assert_eq!(parse_anchor("42"), None);
        assert_eq!(parse_anchor("x:ab"), None);
    }
}
