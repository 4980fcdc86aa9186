//! Audit events, one per management call and security event, and the filters for listing
//! them.

use serde::Serialize;

use crate::clock::Timestamp;

/// One audit event. Never carries a secret.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    /// Position in the chain, from 1, contiguous.
    pub seq: u64,
    /// When it happened.
    pub at: Timestamp,
    /// Who: a token id, or `operator` for local administration, or `system`.
    pub actor: String,
    /// What: `token.create`, `role.update`, `refresh.reuse`, ...
    pub action: String,
    /// The object acted on (an id, scope or role name).
    pub target: String,
    /// `success` or `failure`.
    pub outcome: String,
    /// The client address, when known.
    pub ip: Option<String>,
    /// The request id, when known.
    pub request_id: Option<String>,
    /// The application the object belongs to, when it belongs to one.
    pub app_id: Option<String>,
    /// Further facts (never secrets).
    pub details: serde_json::Value,
    /// The previous event's hash.
    pub prev_hash: String,
    /// This event's hash.
    pub hash: String,
    /// The data subject: the user whose personal data the event carries, or whom it
    /// concerns (a user id). Hashed when present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The personal fields (client address, user agent, email, ...) as stored: sealed
    /// under the subject's person key (see [`crate::privacy`]), so erasing the person
    /// destroys them without touching the chain. Hashed in this form; never returned by a
    /// listing, which opens it (see `personal`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sealed_personal: Option<String>,
    /// In a listing: whether the personal fields could be opened. `None` when they were
    /// (they are back in `ip` and `details`) or the event has none; never stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub personal: Option<crate::privacy::PersonalStatus>,
}

/// Filters for listing audit events, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only events with `seq` below this (the cursor).
    pub before_seq: Option<u64>,
    /// Only this action.
    pub action: Option<String>,
    /// Only this actor.
    pub actor: Option<String>,
    /// Only events at or after this time.
    pub since: Option<Timestamp>,
    /// Only events of this application.
    pub app_id: Option<String>,
    /// At most this many.
    pub limit: usize,
}
