//! Users and their sessions: the session credential (format, cold verification, idle
//! expiry), and the management calls on users and sessions.
//!
//! A session is a principal like an API key: its cold verification builds the same
//! [`CachedKey`] the pipeline keeps for keys (the record made from the user: their roles,
//! their application, the session's absolute expiry), so scope checks, tenant isolation and
//! the no-escalation rule are the very ones keys go through, and a cached session verifies
//! on the same path as a cached key.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use serde::Serialize;
use subtle::ConstantTimeEq;

use super::audit_log::Audit;
use super::{Caller, Kms};
use crate::api_key::cache::{CachedKey, ColdOutcome, SessionPrincipal};
use crate::api_key::{TokenLimits, TokenStatus};
use crate::clock::Timestamp;
use crate::error::{Error, FieldErrors, Result};
use crate::identity::{
    Identity, SessionRecord, SessionSelector, UserRecord, UserStatus, SESSION_ID_PREFIX,
};
use crate::page::{Page, PageRequest};
use crate::policy::scope::{shown, RoleName};
use crate::policy::snapshot::PermissionSnapshot;
use crate::store::{Mutation, TokenRecord};

/// How every session token starts. Upper case cannot start an API-key prefix, so the two
/// kinds of credential never collide.
pub const SESSION_TOKEN_PREFIX: &str = "Ses_";
/// Length of a session's public id part, in base62 characters.
const SESSION_ID_LEN: usize = 16;
/// Length of a session's secret part (43 × log2(62) ≈ 256 bits).
const SESSION_SECRET_LEN: usize = 43;
/// How often, at most, a session's last use is written to the store.
pub(crate) const TOUCH_INTERVAL_SECS: i64 = 60;
/// Longest `User-Agent` kept with a session.
#[cfg_attr(
    not(feature = "sso"),
    allow(dead_code, reason = "sessions are started by single sign-on")
)]
const MAX_USER_AGENT_CHARS: usize = 256;

/// How long sessions live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSettings {
    /// Absolute lifetime from login, in seconds (default 8 hours).
    pub ttl_secs: i64,
    /// Idle timeout, in seconds (default 30 minutes).
    pub idle_secs: i64,
    /// How often a session with an upstream refresh token re-checks the user at the
    /// provider while it is used, in seconds (default 15 minutes).
    pub revalidate_secs: i64,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            ttl_secs: 8 * 3600,
            idle_secs: 30 * 60,
            revalidate_secs: 15 * 60,
        }
    }
}

/// A session token split into its parts.
pub(crate) struct ParsedSession<'a> {
    pub(crate) id: &'a str,
    pub(crate) secret: &'a str,
}

impl ParsedSession<'_> {
    /// The session's id, `ses_<id>`.
    pub(crate) fn session_id(&self) -> String {
        format!("{SESSION_ID_PREFIX}{}", self.id)
    }
}

/// Parses a session token offline: `Ses_`, 16 and then 43 base62 characters.
pub(crate) fn parse_session_token(token: &str) -> Option<ParsedSession<'_>> {
    let rest = token.strip_prefix(SESSION_TOKEN_PREFIX)?;
    if rest.len() != SESSION_ID_LEN + SESSION_SECRET_LEN
        || !rest.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return None;
    }
    let (id, secret) = rest.split_at(SESSION_ID_LEN);
    Some(ParsedSession { id, secret })
}

/// Hex SHA-256 of a session secret: the only form a store keeps. The secret has 256 bits
/// of entropy, so a fast hash is enough (there is nothing to guess offline).
fn secret_hash(secret: &str) -> String {
    use sha2::Digest;
    crate::hex::encode(&sha2::Sha256::digest(secret.as_bytes()))
}

/// A user, as the API shows them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserInfo {
    /// `usr_...`.
    pub id: String,
    /// Their application.
    pub app_id: String,
    /// Email, if the provider gave one.
    pub email: Option<String>,
    /// Display name, if the provider gave one.
    pub name: Option<String>,
    /// `active` or `disabled`.
    pub status: UserStatus,
    /// Every role they hold: given by an administrator and mapped from the provider.
    pub roles: Vec<RoleName>,
    /// The roles given by an administrator.
    pub given_roles: Vec<RoleName>,
    /// The roles mapped from the provider's groups at the last login.
    pub mapped_roles: Vec<RoleName>,
    /// Scopes and roles held only while their condition holds (given by an administrator).
    pub grants: Vec<crate::policy::GrantInput>,
    /// Their accounts at identity providers.
    pub identities: Vec<Identity>,
    /// Creation time.
    pub created_at: Timestamp,
    /// The last successful login.
    pub last_login_at: Option<Timestamp>,
}

impl UserInfo {
    /// The view of a stored user.
    pub fn from_record(u: &UserRecord) -> Self {
        UserInfo {
            id: u.id.clone(),
            app_id: u.app_id.clone(),
            email: u.email.clone(),
            name: u.name.clone(),
            status: u.status,
            roles: u.all_roles(),
            given_roles: u.roles.clone(),
            mapped_roles: u.mapped_roles.clone(),
            grants: u.grants.iter().map(|g| g.to_input()).collect(),
            identities: u.identities.clone(),
            created_at: u.created_at,
            last_login_at: u.last_login_at,
        }
    }
}

/// A session, as the API shows it: never its token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionInfo {
    /// `ses_...`.
    pub id: String,
    /// The user.
    pub user_id: String,
    /// The provider signed in through.
    pub idp_id: String,
    /// Login time.
    pub created_at: Timestamp,
    /// Absolute expiry.
    pub expires_at: Timestamp,
    /// The last recorded use (kept to about a minute).
    pub last_used_at: Timestamp,
    /// The address of the login.
    pub ip: Option<String>,
    /// The browser of the login.
    pub user_agent: Option<String>,
    /// When it was revoked, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<Timestamp>,
    /// Why it was revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoke_reason: Option<String>,
}

impl SessionInfo {
    /// The view of a stored session.
    pub fn from_record(s: &SessionRecord) -> Self {
        SessionInfo {
            id: s.id.clone(),
            user_id: s.user_id.clone(),
            idp_id: s.idp_id.clone(),
            created_at: s.created_at,
            expires_at: s.expires_at,
            last_used_at: s.last_used_at,
            ip: s.ip.clone(),
            user_agent: s.user_agent.clone(),
            revoked_at: s.revoked_at,
            revoke_reason: s.revoke_reason.clone(),
        }
    }
}

/// Changes to a user (`PATCH /v1/users/{id}`); absent fields stay as they are.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserUpdate {
    /// `active` or `disabled` (disabling ends every session of the user).
    #[serde(default)]
    pub status: Option<String>,
    /// The roles given by an administrator (replaces them; mapped roles stay apart).
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    /// Scopes and roles held only while a condition holds (replaces them). A role without
    /// `when` is added to the given roles; a scope needs a `when` (users hold scopes
    /// through roles).
    #[serde(default)]
    pub grants: Option<Vec<crate::policy::GrantInput>>,
}

/// Roles given to or withdrawn from several users (`POST /v1/users/roles`).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkUserRoles {
    /// The users (1 to 1,000).
    pub ids: Vec<String>,
    /// Roles to give.
    #[serde(default)]
    pub grant: Vec<String>,
    /// Roles to withdraw.
    #[serde(default)]
    pub withdraw: Vec<String>,
}

/// The caller's own user and session (`GET /v1/me`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Me {
    /// The user.
    pub user: UserInfo,
    /// This session.
    pub session: SessionInfo,
}

/// What a session-created login returns once: the token, and the user and session.
#[derive(Debug, Clone)]
pub struct StartedSession {
    /// The session token, shown only here.
    pub token: String,
    /// The user.
    pub user: UserInfo,
    /// The session.
    pub session: SessionInfo,
}

impl Kms {
    /// The cold verification of a session token: the stored session, its secret's hash
    /// compared in constant time, the user and the application. `None` for an unknown id or
    /// a wrong secret.
    pub(crate) fn load_session(
        &self,
        parsed: &ParsedSession<'_>,
        snap: &PermissionSnapshot,
    ) -> Result<ColdOutcome> {
        let epoch = self.inner.cache.epoch();
        let store = &self.inner.store;
        let presented = secret_hash(parsed.secret);
        let Some(session) = store.get_session(&parsed.session_id())? else {
            return Ok(None);
        };
        if !bool::from(presented.as_bytes().ct_eq(session.secret_hash.as_bytes())) {
            return Ok(None);
        }
        let Some(user) = store.get_user(&session.user_id)? else {
            return Ok(None);
        };
        let Some(app) = store.get_app(&user.app_id)? else {
            return Ok(None);
        };
        let ended = session.revoked_at.is_some() || user.status == UserStatus::Disabled;
        let record = TokenRecord {
            id: session.id.clone(),
            app_id: user.app_id.clone(),
            name: user.email.clone().unwrap_or_else(|| user.id.clone()),
            secret_hash: String::new(),
            start: String::new(),
            status: if ended {
                TokenStatus::Revoked
            } else {
                TokenStatus::Active
            },
            created_at: session.created_at,
            expires_at: Some(session.expires_at),
            revoked_at: session.revoked_at,
            scopes: Vec::new(),
            roles: user.all_roles(),
            grants: user.grants.clone(),
            metadata: serde_json::Map::new(),
            limits: TokenLimits::default(),
            rotated_from: None,
            rotated_to: None,
            last_used_at: None,
        };
        let mut key = self.key_of(record, app, snap);
        key.session = Some(SessionPrincipal {
            user_id: user.id.clone(),
            idp_id: session.idp_id.clone(),
            recorded_use: AtomicI64::new(session.last_used_at.unix()),
            seen_use: AtomicI64::new(session.last_used_at.unix()),
            revalidated_at: AtomicI64::new(session.revalidated_at.map_or(0, Timestamp::unix)),
            revalidates: session.sealed_upstream_refresh.is_some(),
        });
        Ok(Some((Arc::new(key), epoch)))
    }

    /// The idle rule and the bookkeeping of a session's use, after its key was found:
    /// `Err(())` when the session went idle; `Ok(true)` when the use must be written to the
    /// store (or the user re-checked at the provider) first, which a cached-only
    /// verification cannot do.
    pub(crate) fn session_use_due(&self, key: &CachedKey, now: Timestamp) -> SessionUse {
        let Some(s) = &key.session else {
            return SessionUse::Fine;
        };
        let settings = &self.inner.sessions;
        let seen = s.seen_use.load(Ordering::Relaxed);
        if now.unix() >= seen.saturating_add(settings.idle_secs) {
            return SessionUse::Idle;
        }
        let recorded = s.recorded_use.load(Ordering::Relaxed);
        let revalidate = s.revalidates
            && now.unix()
                >= s.revalidated_at
                    .load(Ordering::Relaxed)
                    .saturating_add(settings.revalidate_secs);
        if revalidate || now.unix() >= recorded.saturating_add(TOUCH_INTERVAL_SECS) {
            SessionUse::Due { revalidate }
        } else {
            s.seen_use.fetch_max(now.unix(), Ordering::Relaxed);
            SessionUse::Fine
        }
    }

    /// Writes a due use of a session (and re-checks the user at the provider when that is
    /// due). `Ok(false)` when the session ended meanwhile (revoked in the store, or refused
    /// by the provider).
    pub(crate) fn record_session_use(
        &self,
        key: &CachedKey,
        revalidate: bool,
        now: Timestamp,
    ) -> Result<bool> {
        let Some(s) = &key.session else {
            return Ok(true);
        };
        if revalidate && !self.revalidate_session(&key.record.id, now)? {
            return Ok(false);
        }
        self.inner.store.apply(&[Mutation::TouchSession {
            id: key.record.id.clone(),
            at: now,
        }])?;
        s.recorded_use.fetch_max(now.unix(), Ordering::Relaxed);
        s.seen_use.fetch_max(now.unix(), Ordering::Relaxed);
        if revalidate {
            s.revalidated_at.fetch_max(now.unix(), Ordering::Relaxed);
        }
        Ok(true)
    }

    /// Without single sign-on no session holds an upstream refresh token: nothing to
    /// re-check.
    #[cfg(not(feature = "sso"))]
    pub(crate) fn revalidate_session(&self, _id: &str, _now: Timestamp) -> Result<bool> {
        Ok(true)
    }

    /// Creates a session for `user` (stored with it in the same batch): its token and its
    /// record.
    pub(crate) fn new_session(
        &self,
        user: &UserRecord,
        idp_id: &str,
        ip: Option<std::net::IpAddr>,
        user_agent: Option<&str>,
        sealed_upstream_refresh: Option<String>,
    ) -> Result<(String, SessionRecord)> {
        let now = self.inner.clock.now();
        let mut token = String::from(SESSION_TOKEN_PREFIX);
        let random = self.inner.random.as_ref();
        crate::api_key::token_format::push_base62(&mut token, SESSION_ID_LEN, random)?;
        let id_part = token[SESSION_TOKEN_PREFIX.len()..].to_owned();
        crate::api_key::token_format::push_base62(&mut token, SESSION_SECRET_LEN, random)?;
        let secret = &token[SESSION_TOKEN_PREFIX.len() + SESSION_ID_LEN..];
        let revalidated_at = sealed_upstream_refresh.as_ref().map(|_| now);
        let record = SessionRecord {
            id: format!("{SESSION_ID_PREFIX}{id_part}"),
            user_id: user.id.clone(),
            app_id: user.app_id.clone(),
            idp_id: idp_id.to_owned(),
            secret_hash: secret_hash(secret),
            created_at: now,
            expires_at: now.plus_secs(self.inner.sessions.ttl_secs),
            last_used_at: now,
            ip: ip.map(|ip| ip.to_string()),
            user_agent: user_agent.map(|ua| {
                ua.chars()
                    .filter(|c| !c.is_control())
                    .take(MAX_USER_AGENT_CHARS)
                    .collect()
            }),
            revoked_at: None,
            revoke_reason: None,
            sealed_upstream_refresh,
            revalidated_at,
        };
        Ok((token, record))
    }

    /// A session for a stored `user`, stored (the hook behind
    /// [`internal::start_session`](crate::internal::start_session)).
    pub(crate) fn start_session_unchecked(
        &self,
        user: &UserRecord,
        idp_id: &str,
    ) -> Result<String> {
        let (token, record) = self.new_session(user, idp_id, None, None, None)?;
        self.inner.store.apply(&[Mutation::InsertSession(record)])?;
        Ok(token)
    }

    /// The user `id` if the caller may see them; `NotFound` otherwise.
    pub(crate) fn visible_user(&self, caller: &Caller, id: &str) -> Result<UserRecord> {
        let not_found = || Error::NotFound(format!("user {} does not exist", shown(id)));
        let user = self.inner.store.get_user(id)?.ok_or_else(not_found)?;
        if caller.sees_app(&user.app_id) {
            Ok(user)
        } else {
            Err(not_found())
        }
    }

    /// The users of an application (`user.read`), by id.
    pub fn list_users(
        &self,
        caller: &Caller,
        app_id: &str,
        page: PageRequest,
    ) -> Result<Page<UserInfo>> {
        caller.require(&*self.snapshot()?, "user.read")?;
        self.visible_app(caller, app_id)?;
        let page = super::apps::paginate(
            &page,
            |after, limit| Ok(self.inner.store.list_users(app_id, after, limit)?),
            |u| &u.id,
        )?;
        Ok(Page {
            items: page.items.iter().map(UserInfo::from_record).collect(),
            next_cursor: page.next_cursor,
        })
    }

    /// One user (`user.read`).
    pub fn get_user(&self, caller: &Caller, id: &str) -> Result<UserInfo> {
        caller.require(&*self.snapshot()?, "user.read")?;
        Ok(UserInfo::from_record(&self.visible_user(caller, id)?))
    }

    /// Disables or re-enables a user, or replaces the roles an administrator gave them
    /// (`user.write`). The caller must hold every role it gives (no escalation). Disabling
    /// ends every session of the user at once.
    pub fn update_user(&self, caller: &Caller, id: &str, req: UserUpdate) -> Result<UserInfo> {
        let snap = self.snapshot()?;
        caller.require(&snap, "user.write")?;
        let stored = self.visible_user(caller, id)?;
        let mut user = stored.clone();
        let mut errs = FieldErrors::default();
        if let Some(s) = req.status.as_deref() {
            match UserStatus::parse(s) {
                Some(st) => user.status = st,
                None => errs.push("status", "must be \"active\" or \"disabled\""),
            }
        }
        if let Some(roles) = &req.roles {
            if let Some(roles) = self.existing_roles(&mut errs, "roles", roles, &snap) {
                user.roles = roles;
            }
        }
        let mut granted_scopes = Vec::new();
        if let Some(raw) = &req.grants {
            let mut plain_roles = Vec::new();
            user.grants =
                self.validate_grants(&mut errs, &snap, raw, &mut granted_scopes, &mut plain_roles);
            if !granted_scopes.is_empty() {
                errs.push(
                    "grants",
                    "a user holds scopes through roles: give a role, or a scope with a condition",
                );
            }
            for r in plain_roles {
                if !user.roles.contains(&r) {
                    user.roles.push(r);
                }
            }
        }
        errs.finish()?;
        if user == stored {
            return Ok(UserInfo::from_record(&user));
        }
        if user.roles != stored.roles || user.grants != stored.grants {
            // No escalation: the caller holds every role given and every target granted,
            // whatever the conditions.
            let mut scopes = Vec::new();
            let mut roles = user.roles.clone();
            for g in &user.grants {
                match &g.target {
                    crate::policy::GrantTarget::Scope(s) => scopes.push(s.clone()),
                    crate::policy::GrantTarget::Role(r) => roles.push(r.clone()),
                }
            }
            let wanted = snap.effective(scopes.iter(), roles.iter());
            caller.require_superset(&snap, &wanted)?;
        }
        let now = self.inner.clock.now();
        let mut batch = vec![Mutation::PutUser(user.clone())];
        let disabled = user.status == UserStatus::Disabled && stored.status != user.status;
        if disabled {
            batch.push(Mutation::RevokeSessions {
                selector: SessionSelector::User(user.id.clone()),
                at: now,
                reason: "user_disabled".to_owned(),
            });
        }
        let audit = Audit::success("user.update", user.id.clone())
            .app(user.app_id.clone())
            .details(serde_json::json!({
                "status": user.status.as_str(),
                "roles": user.roles,
                "grants": user.grants.len(),
                "sessions_ended": disabled,
            }));
        self.commit(Some(caller), audit, batch)?;
        Ok(UserInfo::from_record(&user))
    }

    /// Gives or withdraws administrator-given roles on up to 1,000 users at once
    /// (`user.write`), all or nothing, audited as one change (`user.bulk_roles`). The caller
    /// must hold every role it grants; mapped roles are not touched.
    pub fn change_user_roles(
        &self,
        caller: &Caller,
        req: BulkUserRoles,
    ) -> Result<crate::requests::BulkChanged> {
        let snap = self.snapshot()?;
        caller.require(&snap, "user.write")?;
        if req.ids.is_empty() || req.ids.len() > super::api_keys::MAX_BULK {
            return Err(Error::invalid(
                "ids",
                format!("must list from 1 to {} ids", super::api_keys::MAX_BULK),
            ));
        }
        let (grant, withdraw) =
            super::api_keys::role_change(caller, &snap, &req.grant, &req.withdraw)?;
        let mut batch = Vec::new();
        let mut ids = Vec::new();
        for id in &req.ids {
            let mut user = self.visible_user(caller, id)?;
            let before = user.roles.clone();
            user.roles.retain(|r| !withdraw.contains(r));
            for r in &grant {
                if !user.roles.contains(r) {
                    user.roles.push(r.clone());
                }
            }
            if user.roles != before && !ids.contains(&user.id) {
                ids.push(user.id.clone());
                batch.push(Mutation::PutUser(user));
            }
        }
        if !batch.is_empty() {
            let audit = Audit::success("user.bulk_roles", caller.app_id().to_owned())
                .app(caller.app_id().to_owned())
                .details(serde_json::json!({
                    "count": ids.len(), "ids": ids, "grant": grant, "withdraw": withdraw,
                }));
            self.commit(Some(caller), audit, batch)?;
        }
        Ok(crate::requests::BulkChanged {
            changed: ids.len(),
            ids,
        })
    }

    /// Deletes a user with their identities and sessions (`user.write`).
    pub fn delete_user(&self, caller: &Caller, id: &str) -> Result<()> {
        caller.require(&*self.snapshot()?, "user.write")?;
        let user = self.visible_user(caller, id)?;
        self.commit(
            Some(caller),
            Audit::success("user.delete", user.id.clone()).app(user.app_id.clone()),
            vec![Mutation::DeleteUser(user.id)],
        )
    }

    /// The live sessions of a user (`session.read`), newest first.
    pub fn list_user_sessions(&self, caller: &Caller, user_id: &str) -> Result<Vec<SessionInfo>> {
        caller.require(&*self.snapshot()?, "session.read")?;
        let user = self.visible_user(caller, user_id)?;
        self.live_sessions(&user.id)
    }

    fn live_sessions(&self, user_id: &str) -> Result<Vec<SessionInfo>> {
        let now = self.inner.clock.now();
        let idle = self.inner.sessions.idle_secs;
        Ok(self
            .inner
            .store
            .list_sessions(user_id, now)?
            .iter()
            .filter(|s| s.is_live(now, idle.max(TOUCH_INTERVAL_SECS * 2)))
            .map(SessionInfo::from_record)
            .collect())
    }

    /// Ends one session (`session.revoke`); revoking an ended session changes nothing.
    pub fn revoke_session(&self, caller: &Caller, id: &str) -> Result<SessionInfo> {
        caller.require(&*self.snapshot()?, "session.revoke")?;
        let not_found = || Error::NotFound(format!("session {} does not exist", shown(id)));
        let session = self.inner.store.get_session(id)?.ok_or_else(not_found)?;
        if !caller.sees_app(&session.app_id) {
            return Err(not_found());
        }
        self.end_session(Some(caller), &session, "revoked")?;
        let ended = self.inner.store.get_session(id)?.ok_or_else(not_found)?;
        Ok(SessionInfo::from_record(&ended))
    }

    /// Ends `session` for `reason`, audited; nothing when it already ended.
    fn end_session(
        &self,
        caller: Option<&Caller>,
        session: &SessionRecord,
        reason: &str,
    ) -> Result<()> {
        let id = session.id.clone();
        let audit = Audit::success("session.revoke", id.clone())
            .app(session.app_id.clone())
            .subject(session.user_id.clone())
            .details(serde_json::json!({"user_id": session.user_id, "reason": reason}));
        let store = Arc::clone(&self.inner.store);
        self.commit_unless(
            caller,
            audit,
            vec![Mutation::RevokeSessions {
                selector: SessionSelector::Id(id.clone()),
                at: self.inner.clock.now(),
                reason: reason.to_owned(),
            }],
            || {
                Ok(store
                    .get_session(&id)?
                    .is_none_or(|s| s.revoked_at.is_some()))
            },
        )?;
        Ok(())
    }

    /// Ends every session of a user (`session.revoke`); returns how many were live.
    pub fn revoke_user_sessions(&self, caller: &Caller, user_id: &str) -> Result<usize> {
        caller.require(&*self.snapshot()?, "session.revoke")?;
        let user = self.visible_user(caller, user_id)?;
        let now = self.inner.clock.now();
        let live = self
            .inner
            .store
            .list_sessions(&user.id, now)?
            .into_iter()
            .filter(|s| s.revoked_at.is_none())
            .count();
        let audit = Audit::success("session.revoke_all", user.id.clone())
            .app(user.app_id.clone())
            .details(serde_json::json!({"revoked": live}));
        self.commit(
            Some(caller),
            audit,
            vec![Mutation::RevokeSessions {
                selector: SessionSelector::User(user.id.clone()),
                at: now,
                reason: "revoked".to_owned(),
            }],
        )?;
        Ok(live)
    }

    /// The caller's own user and session; `Forbidden` for a caller that is not a session.
    pub fn me(&self, caller: &Caller) -> Result<Me> {
        let (user, session) = self.own_session(caller)?;
        Ok(Me {
            user: UserInfo::from_record(&user),
            session: SessionInfo::from_record(&session),
        })
    }

    /// The caller's own live sessions.
    pub fn my_sessions(&self, caller: &Caller) -> Result<Vec<SessionInfo>> {
        let (user, _) = self.own_session(caller)?;
        self.live_sessions(&user.id)
    }

    /// Ends the caller's own session (logout).
    pub fn logout(&self, caller: &Caller) -> Result<()> {
        let (_, session) = self.own_session(caller)?;
        self.end_session(Some(caller), &session, "logout")
    }

    fn own_session(&self, caller: &Caller) -> Result<(UserRecord, SessionRecord)> {
        let not_session = || Error::Forbidden {
            required: "a user session".to_owned(),
        };
        let Some(session_id) = caller.session_id() else {
            return Err(not_session());
        };
        let session = self
            .inner
            .store
            .get_session(session_id)?
            .ok_or_else(|| Error::Unauthenticated("the session has ended".to_owned()))?;
        let user = self
            .inner
            .store
            .get_user(&session.user_id)?
            .ok_or_else(|| Error::Unauthenticated("the session has ended".to_owned()))?;
        Ok((user, session))
    }

    /// Validates role names that must exist; `None` (with errors pushed) otherwise.
    pub(crate) fn existing_roles(
        &self,
        errs: &mut FieldErrors,
        field: &str,
        names: &[String],
        snap: &PermissionSnapshot,
    ) -> Option<Vec<RoleName>> {
        let mut out = Vec::new();
        let mut ok = true;
        for (i, n) in names.iter().enumerate() {
            match RoleName::parse(n) {
                Ok(r) if snap.policy().roles.contains_key(&r) => {
                    if !out.contains(&r) {
                        out.push(r);
                    }
                }
                Ok(_) => {
                    errs.push(
                        format!("{field}[{i}]"),
                        format!("the role {} does not exist", shown(n)),
                    );
                    ok = false;
                }
                Err(_) => {
                    errs.push(format!("{field}[{i}]"), "is not a valid role name");
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }
}

/// What a session's use needs, decided from the cache.
pub(crate) enum SessionUse {
    /// Nothing more.
    Fine,
    /// Unused for longer than the idle timeout: expired.
    Idle,
    /// The use must be recorded (and, with `revalidate`, the user re-checked) first.
    Due {
        /// Whether the provider must re-check the user.
        revalidate: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_tokens_parse_only_in_their_own_shape() {
        let id = "A".repeat(SESSION_ID_LEN);
        let secret = "b".repeat(SESSION_SECRET_LEN);
        let token = format!("Ses_{id}{secret}");
        assert!(token.len() <= 64);
        let parsed = parse_session_token(&token).map(|p| (p.id, p.secret));
        assert_eq!(parsed, Some((id.as_str(), secret.as_str())));
        assert!(parse_session_token(&token[..token.len() - 1]).is_none());
        assert!(parse_session_token(&format!("ses_{id}{secret}")).is_none());
        assert!(parse_session_token(&format!("Ses_{id}{}-", &secret[1..])).is_none());
        assert!(parse_session_token("").is_none());
    }
}
