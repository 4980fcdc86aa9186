//! Decision logs, as Open Policy Agent keeps them: one structured line per sampled
//! verification (target `kms::decision`) with the token id, the caller's application, the
//! query, the names of the context values (their values only when configured), the
//! decision and its code. Never a token or any other secret. Off unless `--decision-log`.

use std::sync::OnceLock;

use kms_core::{Caller, Verification, VerifyRequest};

/// How decisions are logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecisionLogSettings {
    /// Share of decisions logged, in millionths.
    pub sample_per_million: u32,
    /// Whether context values are logged too (otherwise only their names).
    pub with_values: bool,
}

static SETTINGS: OnceLock<DecisionLogSettings> = OnceLock::new();

/// Turns decision logging on for this process (the first call wins).
pub fn install(settings: DecisionLogSettings) {
    let _ = SETTINGS.set(settings);
}

fn sampled(per_million: u32) -> bool {
    if per_million >= 1_000_000 {
        return true;
    }
    let mut b = [0u8; 4];
    getrandom::getrandom(&mut b).is_ok() && u32::from_le_bytes(b) % 1_000_000 < per_million
}

/// What a decision line needs from the request, taken before the request is consumed.
#[derive(Debug, Default)]
pub struct Pending {
    query: Option<String>,
    context: Option<serde_json::Map<String, serde_json::Value>>,
    with_values: bool,
}

/// Whether this request's decision is logged; if so, what of the request the line needs.
pub fn start(req: &VerifyRequest) -> Option<Pending> {
    let settings = SETTINGS.get()?;
    if !sampled(settings.sample_per_million) {
        return None;
    }
    let query = req
        .permissions
        .clone()
        .or_else(|| req.scopes.as_ref().map(|s| s.join(" AND ")));
    Some(Pending {
        query,
        context: req.context.clone(),
        with_values: settings.with_values,
    })
}

/// Writes the line of a decision started with [`start`].
pub fn finish(pending: Pending, caller: &Caller, v: &Verification) {
    let keys: Vec<&str> = pending
        .context
        .as_ref()
        .map(|c| c.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let values = if pending.with_values {
        pending
            .context
            .as_ref()
            .map(|c| serde_json::Value::Object(c.clone()).to_string())
    } else {
        None
    };
    tracing::info!(
        target: "kms::decision",
        caller_app = caller.app_id(),
        caller_token = caller.token_id().unwrap_or(""),
        token_id = v.token_id().unwrap_or(""),
        app_id = v.app_id().unwrap_or(""),
        query = pending.query.as_deref().unwrap_or(""),
        context_keys = %keys.join(","),
        context = values.as_deref().unwrap_or(""),
        decision = if v.is_valid() { "allow" } else { "deny" },
        code = v.code().as_str(),
        "decision"
    );
}
