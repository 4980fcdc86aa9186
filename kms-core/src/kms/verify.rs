//! The verification pipeline (order matters):
//! parse + checksum → verified-key cache → store lookup → constant-time argon2id check →
//! status (revoked, expired, disabled) → network allow-list → permission query →
//! rate limit → uses left (spent last, only when everything else passed).

use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

use super::{Caller, Kms};
use crate::api_key::cache::{CachedKey, ColdOutcome};
use crate::api_key::TokenStatus;
use crate::application::AppStatus;
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::policy::query::PermissionQuery;
use crate::policy::scope::{RoleName, Scope};
use crate::policy::snapshot::PermissionSnapshot;
use crate::requests::{parse_ip, validate_scopes, VerifyRequest};
use crate::store::UseOutcome;
use crate::token_format;

/// The outcome code of a verification, as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum VerifyCode {
    /// The token is valid and holds the queried permissions.
    Valid,
    /// Wrong format or checksum.
    Malformed,
    /// Unknown id or wrong secret (indistinguishable on purpose).
    NotFound,
    /// The token has expired.
    Expired,
    /// The token was revoked.
    Revoked,
    /// The token's application is disabled.
    Disabled,
    /// The token may not be used from this network.
    Forbidden,
    /// The token lacks the queried permissions.
    InsufficientPermissions,
    /// The token's rate limit is exhausted.
    RateLimited,
    /// The token has no uses left.
    UsageExceeded,
}

impl VerifyCode {
    /// Every code, for metrics.
    pub const ALL: [VerifyCode; 10] = [
        VerifyCode::Valid,
        VerifyCode::Malformed,
        VerifyCode::NotFound,
        VerifyCode::Expired,
        VerifyCode::Revoked,
        VerifyCode::Disabled,
        VerifyCode::Forbidden,
        VerifyCode::InsufficientPermissions,
        VerifyCode::RateLimited,
        VerifyCode::UsageExceeded,
    ];

    /// Why a credential with this verdict is refused, to follow its name ("the bearer token
    /// has expired"). Unknown ids and wrong secrets read alike.
    pub fn refusal_reason(self) -> &'static str {
        match self {
            VerifyCode::Valid => "is valid",
            VerifyCode::Malformed => "is malformed",
            VerifyCode::NotFound => "is not valid",
            VerifyCode::Expired => "has expired",
            VerifyCode::Revoked => "was revoked",
            VerifyCode::Disabled => "belongs to a disabled application",
            VerifyCode::Forbidden => "may not be used from this address",
            VerifyCode::InsufficientPermissions => "lacks the permission",
            VerifyCode::RateLimited => "is rate limited",
            VerifyCode::UsageExceeded => "has no uses left",
        }
    }

    /// The wire name (`NOT_FOUND`).
    pub fn as_str(self) -> &'static str {
        match self {
            VerifyCode::Valid => "VALID",
            VerifyCode::Malformed => "MALFORMED",
            VerifyCode::NotFound => "NOT_FOUND",
            VerifyCode::Expired => "EXPIRED",
            VerifyCode::Revoked => "REVOKED",
            VerifyCode::Disabled => "DISABLED",
            VerifyCode::Forbidden => "FORBIDDEN",
            VerifyCode::InsufficientPermissions => "INSUFFICIENT_PERMISSIONS",
            VerifyCode::RateLimited => "RATE_LIMITED",
            VerifyCode::UsageExceeded => "USAGE_EXCEEDED",
        }
    }
}

/// The result of verifying a token.
#[derive(Debug, Clone)]
pub struct Verification {
    code: VerifyCode,
    token_id: Option<String>,
    pub(crate) key: Option<Arc<CachedKey>>,
    pub(crate) snapshot: Option<Arc<PermissionSnapshot>>,
    remaining: Option<u64>,
    retry_after: Option<u64>,
    /// For `RATE_LIMITED` by the key's own rate limit: seconds until a cell is free.
    pub(crate) rate_limited_for: Option<u64>,
    /// For a key with conditional grants: what it holds for this request (its grants
    /// plus those whose condition held); `None`: the key's own set.
    pub(crate) effective: Option<Arc<crate::policy::snapshot::EffectiveSet>>,
    /// For a refused key that was found: where it is counted.
    usage: Option<Arc<crate::usage::UsageHandle>>,
}

/// Why a key that was found is refused by its limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refused {
    pub(crate) code: VerifyCode,
    /// For a rate limit: seconds until a retry may succeed.
    pub(crate) retry_after: Option<u64>,
}

/// The conditional grants of `role` and of every role it inherits: (scope, condition).
fn role_conditionals(
    policy: &crate::policy::Policy,
    role: &RoleName,
) -> Vec<(Scope, Arc<crate::policy::Condition>)> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![role.clone()];
    while let Some(r) = stack.pop() {
        if !seen.insert(r.clone()) {
            continue;
        }
        let Some(def) = policy.roles.get(&r) else {
            continue;
        };
        for g in &def.grants {
            if let crate::policy::GrantTarget::Scope(s) = &g.target {
                out.push((s.clone(), Arc::clone(&g.when)));
            }
        }
        stack.extend(def.inherits.iter().cloned());
    }
    out
}

/// The verdict on a key's uses.
fn use_verdict(outcome: UseOutcome) -> std::result::Result<Option<u64>, Refused> {
    let code = match outcome {
        UseOutcome::Unlimited => return Ok(None),
        UseOutcome::Remaining(n) => return Ok(Some(n)),
        UseOutcome::Exhausted => VerifyCode::UsageExceeded,
        UseOutcome::Missing => VerifyCode::NotFound,
    };
    Err(Refused {
        code,
        retry_after: None,
    })
}

/// The body of a verification response, exactly as the HTTP API gives it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
#[allow(
    clippy::large_enum_variant,
    reason = "built once per response and serialized at once; boxing buys nothing"
)]
pub enum VerifyResponse {
    /// A valid token.
    Valid {
        /// Always true.
        valid: bool,
        /// `VALID`.
        code: VerifyCode,
        /// `api_key`, or `session` for a user's session token.
        kind: &'static str,
        /// For a session: the user.
        #[serde(skip_serializing_if = "Option::is_none")]
        user_id: Option<String>,
        /// For a session: its id.
        #[serde(skip_serializing_if = "Option::is_none")]
        session_id: Option<String>,
        /// The token's id.
        token_id: String,
        /// Its application.
        app_id: String,
        /// Its name.
        name: String,
        /// Every scope it holds.
        scopes: Vec<Scope>,
        /// Roles granted.
        roles: Vec<RoleName>,
        /// Expiry or null.
        expires_at: Option<Timestamp>,
        /// Metadata.
        metadata: serde_json::Map<String, serde_json::Value>,
        /// Uses left, for tokens with a use limit.
        #[serde(skip_serializing_if = "Option::is_none")]
        remaining: Option<u64>,
    },
    /// A failed verification: only the code and, where the token was found, its id.
    Invalid {
        /// Always false.
        valid: bool,
        /// Why.
        code: VerifyCode,
        /// The token's id, when it was found.
        #[serde(skip_serializing_if = "Option::is_none")]
        token_id: Option<String>,
    },
}

impl Verification {
    fn fail(code: VerifyCode, key: Option<&Arc<CachedKey>>) -> Self {
        Verification {
            code,
            token_id: key.map(|k| k.record.id.clone()),
            key: None,
            snapshot: None,
            remaining: None,
            retry_after: None,
            rate_limited_for: None,
            effective: None,
            usage: key.and_then(|k| k.usage.clone()),
        }
    }

    fn locked_out(retry_after: u64) -> Self {
        Verification {
            retry_after: Some(retry_after),
            ..Verification::fail(VerifyCode::RateLimited, None)
        }
    }

    /// For `RATE_LIMITED` caused by a brute-force lockout: seconds until a retry may succeed.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after
    }

    /// The error for whoever presented this token as its own credential (bearer
    /// authentication, the guard layer, the token endpoint), or `None` when it is valid.
    /// The one mapping from a verdict to a refusal: a lockout or an exhausted rate limit is
    /// `RateLimited` with the real wait; a missing permission is `Forbidden` naming
    /// `required`; everything else (malformed, unknown, expired, revoked, disabled, a
    /// network outside the allow-list, no uses left) is `Unauthenticated`, saying why
    /// without saying whether an id exists. `credential` names it in the message ("the
    /// bearer token", "the API key").
    pub fn refusal(&self, credential: &str, required: Option<&str>) -> Option<Error> {
        if let Some(secs) = self.retry_after.or(self.rate_limited_for) {
            return Some(Error::RateLimited {
                retry_after_secs: secs,
            });
        }
        match self.code {
            VerifyCode::Valid => None,
            VerifyCode::RateLimited => Some(Error::RateLimited {
                retry_after_secs: 1,
            }),
            VerifyCode::InsufficientPermissions => Some(Error::Forbidden {
                required: required.unwrap_or(crate::policy::ADMIN).to_owned(),
            }),
            code => Some(Error::Unauthenticated(format!(
                "{credential} {}",
                code.refusal_reason()
            ))),
        }
    }

    /// The outcome code.
    pub fn code(&self) -> VerifyCode {
        self.code
    }

    /// Whether the token is valid for the query.
    pub fn is_valid(&self) -> bool {
        self.code == VerifyCode::Valid
    }

    /// The token's id, when it was found.
    pub fn token_id(&self) -> Option<&str> {
        match &self.key {
            Some(k) => Some(&k.record.id),
            None => self.token_id.as_deref(),
        }
    }

    /// For a valid session token: the user's id.
    pub fn user_id(&self) -> Option<&str> {
        self.key
            .as_ref()
            .and_then(|k| k.session.as_ref())
            .map(|s| s.user_id.as_str())
    }

    /// The token's application, when valid.
    pub fn app_id(&self) -> Option<&str> {
        self.key.as_ref().map(|k| k.record.app_id.as_str())
    }

    /// Uses left after this verification, for tokens with a use limit.
    pub fn remaining(&self) -> Option<u64> {
        self.remaining
    }

    /// Whether the verified token holds `scope` (false when not valid). Use it for further
    /// in-process checks after one verification.
    pub fn allows(&self, scope: &str) -> bool {
        match (&self.key, &self.snapshot) {
            (Some(k), Some(s)) => s.check(self.effective.as_ref().unwrap_or(&k.effective), scope),
            _ => false,
        }
    }

    /// The response body of the HTTP API.
    pub fn to_response(&self) -> VerifyResponse {
        match (&self.key, &self.snapshot) {
            (Some(k), Some(snap)) if self.is_valid() => VerifyResponse::Valid {
                valid: true,
                code: self.code,
                kind: if k.session.is_some() {
                    "session"
                } else {
                    "api_key"
                },
                user_id: k.session.as_ref().map(|s| s.user_id.clone()),
                session_id: k.session.as_ref().map(|_| k.record.id.clone()),
                token_id: k.record.id.clone(),
                app_id: k.record.app_id.clone(),
                name: k.record.name.clone(),
                scopes: snap.scopes_of(self.effective.as_ref().unwrap_or(&k.effective)),
                roles: k.record.roles.clone(),
                expires_at: k.record.expires_at,
                metadata: k.record.metadata.clone(),
                remaining: self.remaining,
            },
            _ => VerifyResponse::Invalid {
                valid: false,
                code: self.code,
                token_id: self.token_id.clone(),
            },
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// A verification asked for by a client: spends a use.
    Verify,
    /// Authentication of a management call: spends nothing.
    Authenticate,
}

/// One presentation of a token to the pipeline.
#[derive(Clone, Copy)]
pub(crate) struct Presented<'a> {
    pub(crate) token: &'a str,
    pub(crate) query: Option<&'a PermissionQuery>,
    /// The address the token is used from: checked against its allow-list, and the source
    /// failures are counted against.
    pub(crate) ip: Option<IpAddr>,
    /// Only tokens of this application are visible; others answer `NOT_FOUND`.
    pub(crate) owner: Option<&'a str>,
    /// Whose failures these are: an address reported by a tenant in a verify request is
    /// counted, and locked out, only for that tenant.
    pub(crate) lockout_scope: Option<&'a str>,
    /// The service that presented the token on someone's behalf (`/v1/verify`): without a
    /// reported address, failures count against it; audit events name it.
    pub(crate) caller: Option<&'a Caller>,
    pub(crate) purpose: Purpose,
    /// Answer only what needs neither the store nor argon2; `None` otherwise.
    pub(crate) cached_only: bool,
    /// What conditions on grants see as `context.NAME`.
    pub(crate) context: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

impl<'a> Presented<'a> {
    /// Who a failure of this presentation counts against, and who is locked out after too
    /// many: the end user's address when one is known (scoped to the tenant that reported
    /// it), otherwise the verifying service itself. `None` for an in-process verification
    /// with neither.
    pub(crate) fn failure_source(&self) -> Option<String> {
        match (self.ip, self.caller.and_then(Caller::token_id)) {
            (Some(ip), _) => Some(match self.lockout_scope {
                Some(scope) => format!("ip:{scope}:{ip}"),
                None => format!("ip:{ip}"),
            }),
            (None, Some(service)) => Some(format!("caller:{service}")),
            (None, None) => None,
        }
    }

    pub(crate) fn new(token: &'a str, purpose: Purpose) -> Self {
        Presented {
            token,
            query: None,
            ip: None,
            owner: None,
            lockout_scope: None,
            caller: None,
            purpose,
            cached_only: false,
            context: None,
        }
    }
}

impl Kms {
    /// Verifies `token` in-process, optionally against a permission query and the address
    /// it is used from. `Err` only when the store fails; every verdict is a [`VerifyCode`].
    pub fn verify_token(
        &self,
        token: &str,
        query: Option<&PermissionQuery>,
        ip: Option<IpAddr>,
    ) -> Result<Verification> {
        let p = Presented {
            query,
            ip,
            ..Presented::new(token, Purpose::Verify)
        };
        self.run_pipeline_full(p)
    }

    /// [`verify_token`](Self::verify_token) with the `context` that conditions on grants
    /// read as `context.NAME` (see [`Condition`](crate::Condition)); checked as
    /// `POST /v1/verify` checks it.
    pub fn verify_token_in_context(
        &self,
        token: &str,
        query: Option<&PermissionQuery>,
        ip: Option<IpAddr>,
        context: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Verification> {
        crate::requests::validate_context(context)?;
        let p = Presented {
            query,
            ip,
            context: Some(context),
            ..Presented::new(token, Purpose::Verify)
        };
        self.run_pipeline_full(p)
    }

    /// [`verify_token_in_context`](Self::verify_token_in_context) when it can be answered
    /// without the store or argon2; `None` otherwise.
    pub fn try_verify_token_in_context_cached(
        &self,
        token: &str,
        query: Option<&PermissionQuery>,
        ip: Option<IpAddr>,
        context: &serde_json::Map<String, serde_json::Value>,
    ) -> Option<Result<Verification>> {
        if let Err(e) = crate::requests::validate_context(context) {
            return Some(Err(e));
        }
        let p = Presented {
            query,
            ip,
            context: Some(context),
            cached_only: true,
            ..Presented::new(token, Purpose::Verify)
        };
        self.run_pipeline(p).transpose()
    }

    /// [`verify_token`](Self::verify_token) when it can be answered without the store or
    /// argon2; `None` otherwise (then call `verify_token` off the async executor).
    pub fn try_verify_token_cached(
        &self,
        token: &str,
        query: Option<&PermissionQuery>,
        ip: Option<IpAddr>,
    ) -> Option<Result<Verification>> {
        let p = Presented {
            query,
            ip,
            cached_only: true,
            ..Presented::new(token, Purpose::Verify)
        };
        self.run_pipeline(p).transpose()
    }

    /// Verification on behalf of `caller` (`token.verify`), as the HTTP API does it. A
    /// caller outside the system application only ever sees its own application's tokens;
    /// others' answer `NOT_FOUND`. Failures count against the token id and the `ip` of the
    /// request (the end user), never against the calling service.
    pub fn verify(&self, caller: &Caller, req: &VerifyRequest) -> Result<Verification> {
        let (query, ip) = self.prepare_verify(caller, req)?;
        let p = self.verify_presented(caller, req, query.as_ref(), ip);
        self.run_pipeline_full(p)
    }

    /// [`verify`](Self::verify) when it can be answered without the store or argon2 (a
    /// cached key without a use limit, or a malformed token); `None` otherwise. Lets an async
    /// server answer the hot path inline and send only the rest to a blocking pool.
    pub fn try_verify_cached(
        &self,
        caller: &Caller,
        req: &VerifyRequest,
    ) -> Option<Result<Verification>> {
        let (query, ip) = match self.prepare_verify(caller, req) {
            Ok(v) => v,
            Err(e) => return Some(Err(e)),
        };
        let p = Presented {
            cached_only: true,
            ..self.verify_presented(caller, req, query.as_ref(), ip)
        };
        self.run_pipeline(p).transpose()
    }

    fn verify_presented<'a>(
        &self,
        caller: &'a Caller,
        req: &'a VerifyRequest,
        query: Option<&'a PermissionQuery>,
        ip: Option<IpAddr>,
    ) -> Presented<'a> {
        Presented {
            query,
            ip,
            owner: (!caller.is_system()).then(|| caller.app_id()),
            lockout_scope: Some(caller.app_id()),
            caller: Some(caller),
            context: req.context.as_ref(),
            ..Presented::new(&req.token, Purpose::Verify)
        }
    }

    fn prepare_verify(
        &self,
        caller: &Caller,
        req: &VerifyRequest,
    ) -> Result<(Option<PermissionQuery>, Option<IpAddr>)> {
        caller.require(&*self.snapshot()?, "token.verify")?;
        let query = match (&req.permissions, &req.scopes) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid(
                    "scopes",
                    "give either permissions or scopes, not both",
                ))
            }
            (Some(expr), None) => Some(PermissionQuery::parse(expr)?),
            (None, Some(list)) => {
                let mut errs = crate::error::FieldErrors::default();
                let scopes = validate_scopes(&mut errs, "scopes", list);
                errs.finish()?;
                Some(PermissionQuery::all_of(scopes))
            }
            (None, None) => None,
        };
        if let Some(context) = &req.context {
            crate::requests::validate_context(context)?;
        }
        Ok((query, parse_ip(req.ip.as_deref())?))
    }

    /// Authenticates the bearer token of a management call. Every failure is
    /// `Unauthenticated` (or `RateLimited` for a locked-out source), with a message that
    /// says why without revealing whether an id exists.
    pub fn authenticate(&self, bearer: &str, ip: Option<IpAddr>) -> Result<Caller> {
        let v = self.run_pipeline_full(Presented {
            ip,
            ..Presented::new(bearer, Purpose::Authenticate)
        })?;
        caller_from(v)
    }

    /// [`authenticate`](Self::authenticate) when it can be answered without the store or
    /// argon2; `None` otherwise.
    pub fn try_authenticate_cached(
        &self,
        bearer: &str,
        ip: Option<IpAddr>,
    ) -> Option<Result<Caller>> {
        let p = Presented {
            ip,
            cached_only: true,
            ..Presented::new(bearer, Purpose::Authenticate)
        };
        match self.run_pipeline(p) {
            Ok(Some(v)) => Some(caller_from(v)),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }

    pub(crate) fn run_pipeline_full(&self, p: Presented<'_>) -> Result<Verification> {
        self.run_pipeline(Presented {
            cached_only: false,
            ..p
        })?
        .ok_or_else(|| Error::internal("the pipeline gave no verdict"))
    }

    /// The pipeline, and the verdict counted: a verification by its outcome code for the
    /// key's usage, a valid use (an authentication too) as the key's last use. Verdicts
    /// that name no key (malformed, unknown, another tenant's) are counted nowhere.
    /// `Ok(None)` only in `cached_only` mode, when the verdict needs the store or argon2.
    pub(crate) fn run_pipeline(&self, p: Presented<'_>) -> Result<Option<Verification>> {
        let now = self.inner.clock.now();
        let verdict = self.decide(p, now)?;
        if let Some(v) = &verdict {
            let handle = match &v.key {
                Some(k) => k.usage.as_deref(),
                None => v.usage.as_deref(),
            };
            if let Some(handle) = handle {
                handle.record(v.code, now, p.purpose == Purpose::Verify);
            }
        }
        Ok(verdict)
    }

    /// The verdict of the pipeline at `now`.
    fn decide(&self, p: Presented<'_>, now: Timestamp) -> Result<Option<Verification>> {
        let gate = &self.inner.counters;
        // 1. Format and checksum, offline: an API key, or a user's session.
        let credential = match token_format::parse(p.token) {
            Ok(parsed) => Credential::Key(parsed),
            Err(_) => match super::sessions::parse_session_token(p.token) {
                Some(parsed) => Credential::Session(parsed),
                None => {
                    let source = p.failure_source();
                    if p.cached_only && source.is_some() {
                        return Ok(None); // counting the failure takes a lock and may audit
                    }
                    self.count_failure(&p, source.as_deref(), None, now);
                    return Ok(Some(Verification::fail(VerifyCode::Malformed, None)));
                }
            },
        };
        if p.cached_only
            && self
                .inner
                .policy_stale
                .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Ok(None);
        }
        let snap = self.snapshot()?;
        // 2. The verified-key cache. A correct, cached secret is not a guess: it passes even
        //    while its source is locked out.
        let cache = &self.inner.cache;
        let digest = cache.digest(p.token);
        let key = match cache.get(&digest) {
            Some(k) if k.effective.generation() == snap.generation() => k,
            _ if p.cached_only => return Ok(None),
            _ => {
                // 3. Failure gate: a locked-out source is not hashed for. Only the source
                //    that sent the failures is locked, never the token id they named: no
                //    one can lock out a key they do not hold.
                let source_key = p.failure_source();
                if let Some(secs) = source_key.as_deref().and_then(|k| gate.locked_for(k, now)) {
                    return Ok(Some(Verification::locked_out(secs)));
                }
                // 4. Store lookup and constant-time argon2id.
                let cold = || match &credential {
                    Credential::Key(parsed) => self.load_and_check(parsed, &snap),
                    Credential::Session(parsed) => self.load_session(parsed, &snap),
                };
                match cache.single_flight(digest, cold)? {
                    Some(k) => {
                        cache.insert(digest, Arc::clone(&k.0), k.1);
                        k.0
                    }
                    None => {
                        let target = credential.id();
                        self.count_failure(&p, source_key.as_deref(), Some(&target), now);
                        return Ok(Some(Verification::fail(VerifyCode::NotFound, None)));
                    }
                }
            }
        };
        // Another tenant's token is indistinguishable from an unknown one.
        if p.owner.is_some_and(|o| o != key.record.app_id) {
            return Ok(Some(Verification::fail(VerifyCode::NotFound, None)));
        }
        // 5. Status, network allow-lists, permissions.
        // The query is decided first on the key's own grants, then, only if that fails,
        // with just the conditional grants that could supply a scope it asks for.
        let for_query = match p.query {
            Some(q) if !key.conditional.is_empty() && !snap.evaluate(&key.effective, q) => {
                Some(self.effective_for(&key, &snap, p.context, p.ip, now, Some(q)))
            }
            _ => None,
        };
        if let Some(code) = self.refusal(&key, for_query.as_ref(), &snap, p.ip, p.query, now) {
            return Ok(Some(Verification::fail(code, Some(&key))));
        }
        // A session: idle expiry, and its use recorded about once a minute.
        match self.session_use_due(&key, now) {
            super::sessions::SessionUse::Fine => {}
            super::sessions::SessionUse::Idle => {
                return Ok(Some(Verification::fail(VerifyCode::Expired, Some(&key))));
            }
            super::sessions::SessionUse::Due { .. } if p.cached_only => return Ok(None),
            super::sessions::SessionUse::Due { revalidate } => {
                if !self.record_session_use(&key, revalidate, now)? {
                    return Ok(Some(Verification::fail(VerifyCode::Revoked, Some(&key))));
                }
            }
        }
        // What the answer lists (and `allows` checks): every conditional grant that holds.
        let effective = (!key.conditional.is_empty())
            .then(|| self.effective_for(&key, &snap, p.context, p.ip, now, None));
        // Spending a use, or a rate-limit cell kept by another server, blocks.
        if p.cached_only
            && (key.record.limits.uses.is_some()
                || (key.record.limits.ratelimit.is_some() && self.inner.counters.is_remote()))
        {
            return Ok(None);
        }
        // 6. Rate limit; 7. uses, spent last.
        let remaining = match self.take_limits(&key, p.purpose)? {
            Ok(remaining) => remaining,
            Err(Refused {
                code: VerifyCode::NotFound,
                ..
            }) => return Ok(Some(Verification::fail(VerifyCode::NotFound, None))),
            Err(r) => {
                return Ok(Some(Verification {
                    rate_limited_for: r.retry_after,
                    ..Verification::fail(r.code, Some(&key))
                }))
            }
        };
        Ok(Some(Verification {
            code: VerifyCode::Valid,
            token_id: None,
            key: Some(key),
            snapshot: Some(snap),
            remaining,
            retry_after: None,
            rate_limited_for: None,
            effective: effective.map(Arc::new),
            usage: None,
        }))
    }

    /// Step 5 for a key that was found: its status, its and its application's network
    /// allow-lists, and the permission query. The same rules guard every exchange for an
    /// access token, a refresh included.
    pub(crate) fn refusal(
        &self,
        key: &CachedKey,
        effective: Option<&crate::policy::snapshot::EffectiveSet>,
        snap: &PermissionSnapshot,
        ip: Option<IpAddr>,
        query: Option<&PermissionQuery>,
        now: Timestamp,
    ) -> Option<VerifyCode> {
        if key.record.status == TokenStatus::Revoked {
            Some(VerifyCode::Revoked)
        } else if key.record.is_expired(now) {
            Some(VerifyCode::Expired)
        } else if key.app.status == AppStatus::Disabled {
            Some(VerifyCode::Disabled)
        } else if !allowed_from(&key.record.limits.ip_allow, ip)
            || !allowed_from(&key.app.security.ip_allow, ip)
        {
            Some(VerifyCode::Forbidden)
        } else if query.is_some_and(|q| !snap.evaluate(effective.unwrap_or(&key.effective), q)) {
            Some(VerifyCode::InsufficientPermissions)
        } else {
            None
        }
    }

    /// For a key with conditional grants, what it holds for this request: its own set plus
    /// every conditional grant whose condition holds for `context`, the key's metadata,
    /// `ip` and `now`.
    /// With `query`, only the conditional grants that supply one of its scopes are
    /// evaluated.
    pub(crate) fn effective_for(
        &self,
        key: &CachedKey,
        snap: &PermissionSnapshot,
        context: Option<&serde_json::Map<String, serde_json::Value>>,
        ip: Option<IpAddr>,
        now: Timestamp,
        query: Option<&PermissionQuery>,
    ) -> crate::policy::snapshot::EffectiveSet {
        let asked: Vec<&Scope> = query.map(PermissionQuery::scopes).unwrap_or_default();
        let relevant = |b: &&crate::api_key::cache::Branch| {
            query.is_none() || asked.iter().any(|s| snap.check(&b.set, s.as_str()))
        };
        let empty = serde_json::Map::new();
        let input = crate::policy::ConditionInput {
            context: context.unwrap_or(&empty),
            metadata: &key.record.metadata,
            ip,
            now,
        };
        let holding = key
            .conditional
            .iter()
            .filter(relevant)
            .filter(|b| b.when.iter().all(|c| c.holds(&input)))
            .map(|b| &*b.set);
        snap.union(&key.effective, holding)
    }

    /// Steps 6 and 7: takes a rate-limit cell, then, for a verification, spends a use (for
    /// an authentication, only checks one is left). Gives the uses left.
    pub(crate) fn take_limits(
        &self,
        key: &CachedKey,
        purpose: Purpose,
    ) -> Result<std::result::Result<Option<u64>, Refused>> {
        if let Some(limit) = key.record.limits.ratelimit {
            if let Err(secs) = self.inner.counters.take(&key.record.id, limit) {
                return Ok(Err(Refused {
                    code: VerifyCode::RateLimited,
                    retry_after: Some(secs),
                }));
            }
        }
        if key.record.limits.uses.is_none() {
            return Ok(Ok(None));
        }
        if purpose == Purpose::Verify {
            return self.spend_use(key);
        }
        let outcome = match self
            .inner
            .store
            .get_token(&key.record.id)?
            .and_then(|r| r.limits.uses)
        {
            Some(0) => UseOutcome::Exhausted,
            Some(n) => UseOutcome::Remaining(n),
            None => UseOutcome::Unlimited,
        };
        Ok(use_verdict(outcome))
    }

    /// Spends one use of a key with a use limit, atomically in the store; nothing for a key
    /// without one. An exchange for an access token calls it last, once everything else
    /// passed, as a verification does.
    pub(crate) fn spend_use(
        &self,
        key: &CachedKey,
    ) -> Result<std::result::Result<Option<u64>, Refused>> {
        if key.record.limits.uses.is_none() {
            return Ok(Ok(None));
        }
        Ok(use_verdict(self.inner.store.consume_use(&key.record.id)?))
    }

    /// The key with id `token_id` as it is now, for re-checking a grant made earlier (a
    /// refresh): its record, application and effective set under `snap`, or `None` when it
    /// or its application no longer exists.
    pub(crate) fn current_key(
        &self,
        token_id: &str,
        snap: &PermissionSnapshot,
    ) -> Result<Option<CachedKey>> {
        let Some(record) = self.inner.store.get_token(token_id)? else {
            return Ok(None);
        };
        let Some(app) = self.inner.store.get_app(&record.app_id)? else {
            return Ok(None);
        };
        Ok(Some(self.key_of(record, app, snap)))
    }

    /// A verified key as the pipeline keeps it: the effective set computed from `snap`,
    /// and no copy of the secret's hash.
    pub(crate) fn key_of(
        &self,
        mut record: crate::store::TokenRecord,
        app: crate::application::Application,
        snap: &PermissionSnapshot,
    ) -> CachedKey {
        let shared = &self.inner.cache.shared;
        let effective = shared.effective(snap.generation(), &record.scopes, &record.roles, || {
            snap.effective(record.scopes.iter(), record.roles.iter())
        });
        use crate::api_key::cache::Branch;
        use crate::policy::GrantTarget;
        let policy = snap.policy();
        let set_of = |scopes: Vec<Scope>, roles: Vec<RoleName>| {
            shared.effective(snap.generation(), &scopes, &roles, || {
                snap.effective(scopes.iter(), roles.iter())
            })
        };
        let mut branches: Vec<Branch> = Vec::new();
        // The conditional grants of the roles held outright.
        for role in &record.roles {
            for (scope, when) in role_conditionals(policy, role) {
                branches.push(Branch {
                    when: vec![when],
                    set: set_of(vec![scope], Vec::new()),
                });
            }
        }
        for g in &record.grants {
            match &g.target {
                GrantTarget::Scope(s) => branches.push(Branch {
                    when: vec![Arc::clone(&g.when)],
                    set: set_of(vec![s.clone()], Vec::new()),
                }),
                GrantTarget::Role(r) => {
                    branches.push(Branch {
                        when: vec![Arc::clone(&g.when)],
                        set: set_of(Vec::new(), vec![r.clone()]),
                    });
                    for (scope, when) in role_conditionals(policy, r) {
                        branches.push(Branch {
                            when: vec![Arc::clone(&g.when), when],
                            set: set_of(vec![scope], Vec::new()),
                        });
                    }
                }
            }
        }
        let conditional: Arc<[Branch]> = branches.into();
        record.secret_hash = String::new();
        // API keys are counted each on its own; sessions for their application only.
        let usage = self.inner.usage.as_ref().map(|u| {
            let token_id = if record.id.starts_with(token_format::TOKEN_ID_PREFIX) {
                record.id.as_str()
            } else {
                ""
            };
            u.handle(&record.app_id, token_id)
        });
        CachedKey {
            record,
            app: shared.app(app),
            effective,
            conditional,
            session: None,
            usage,
        }
    }

    /// Counts a failed verification against its `source` (see
    /// [`Presented::failure_source`]); a source that crosses the threshold is locked out,
    /// audited and reported. `target` is the token id the failure named: failures against
    /// one id are counted too, from every source together, but only to audit a targeted
    /// guessing campaign, never to refuse the id (its holder did nothing).
    fn count_failure(
        &self,
        p: &Presented<'_>,
        source: Option<&str>,
        target: Option<&str>,
        now: Timestamp,
    ) {
        use super::audit_log::Audit;
        use crate::defence::failure_gate::Failure;
        let gate = &self.inner.counters;
        let policy = gate.policy();
        // Whoever sent it: the verifying service (with the address it reported), or the
        // bearer's client address.
        let attribute = |audit: Audit| {
            let audit = match p.caller {
                Some(c) => audit.app(c.app_id()),
                None => audit.actor("anonymous"),
            };
            match p.ip {
                Some(ip) => audit.ip(ip),
                None => audit,
            }
        };
        // Failed authentications are audited aggregated: the first of each source's window,
        // then the lockout if it comes; never one event per failure. Best effort: auditing
        // must not fail the request that triggered it.
        if let Some(source) = source {
            match gate.record_failure(source, now) {
                Failure::FirstInWindow => {
                    let audit = attribute(Audit::success("auth.failure", source).failure())
                        .details(serde_json::json!({
                            "aggregated": "first failure of the counting window",
                            "window_secs": policy.window_secs,
                            "token_id": target,
                        }));
                    let _ = self.commit(p.caller, audit, Vec::new());
                }
                Failure::LockedOut => {
                    let audit = attribute(Audit::success("security.lockout", source).failure())
                        .details(serde_json::json!({
                            "failures": policy.threshold,
                            "window_secs": policy.window_secs,
                            "lockout_secs": policy.lockout_secs,
                        }));
                    let _ = self.commit(p.caller, audit, Vec::new());
                    self.emit(&crate::security_event::SecurityEvent::Lockout {
                        source: source.to_owned(),
                    });
                }
                Failure::Uncounted | Failure::Counted => {}
            }
        }
        if let Some(id) = target {
            // Flagged once per lockout length: the "lock" on a target refuses nothing, it
            // only keeps the campaign to one event.
            let key = format!("target:{id}");
            if gate.locked_for(&key, now).is_none()
                && gate.record_failure(&key, now) == Failure::LockedOut
            {
                let audit = Audit::success("security.guessing", id)
                    .failure()
                    .actor("system")
                    .details(serde_json::json!({
                        "failures": policy.threshold,
                        "window_secs": policy.window_secs,
                        "refused": false,
                    }));
                let _ = self.commit(None, audit, Vec::new());
            }
        }
    }

    /// The cold path: store lookup and argon2id. Returns the verified key and the cache
    /// epoch read before the lookup, or `None` for an unknown id or a wrong secret, which
    /// cost the same hashing work.
    fn load_and_check(
        &self,
        parsed: &token_format::ParsedToken<'_>,
        snap: &PermissionSnapshot,
    ) -> Result<ColdOutcome> {
        let epoch = self.inner.cache.epoch();
        let id = parsed.token_id();
        let Some(record) = self.inner.store.get_token(&id)? else {
            let _ = self
                .inner
                .hasher
                .verify(parsed.secret(), &self.inner.dummy_hash);
            return Ok(None);
        };
        if !self
            .inner
            .hasher
            .verify(parsed.secret(), &record.secret_hash)?
        {
            return Ok(None);
        }
        let Some(app) = self.inner.store.get_app(&record.app_id)? else {
            return Ok(None);
        };
        if app.token_prefix.as_str() != parsed.prefix() {
            return Ok(None);
        }
        // The hash is not needed once verified; the key kept holds no copy of it.
        Ok(Some((Arc::new(self.key_of(record, app, snap)), epoch)))
    }
}

/// A presented credential, parsed offline.
enum Credential<'a> {
    /// An API key.
    Key(token_format::ParsedToken<'a>),
    /// A user's session token.
    Session(super::sessions::ParsedSession<'a>),
}

impl Credential<'_> {
    /// The id the credential names (`tok_...` or `ses_...`).
    fn id(&self) -> String {
        match self {
            Credential::Key(p) => p.token_id(),
            Credential::Session(p) => p.session_id(),
        }
    }
}

/// The caller of a management call, from the verdict on its bearer token.
fn caller_from(v: Verification) -> Result<Caller> {
    if let Some(refused) = v.refusal("the bearer token", None) {
        return Err(refused);
    }
    match &v.key {
        Some(k) => Ok(Caller::for_key(Arc::clone(k))),
        None => Err(Error::internal("a valid verification without its key")),
    }
}

/// Whether an allow-list admits `ip`. An empty list admits everything; an unknown address
/// is outside every non-empty list.
fn allowed_from(list: &[crate::api_key::IpNetwork], ip: Option<IpAddr>) -> bool {
    list.is_empty() || ip.is_some_and(|ip| list.iter().any(|n| n.contains(ip)))
}
