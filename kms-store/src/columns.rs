//! The mapping between domain types and table rows, shared by the SQL stores: which columns
//! hold what, in which order, and how values are encoded (times as unix seconds, lists and
//! maps as JSON text, the use counter as its own integer column so it can be decremented in
//! place). Each store reads a row through [`ColumnRead`], so a record is decoded by one
//! piece of code whatever the database.

use kms_core::store::{
    Identity, IdpRecord, IdpStatus, KeyAlgorithm, KeyState, LoginAttempt, RefreshRecord,
    RefreshStatus, Revocation, SessionRecord, SigningKeyRecord, StoreError, TokenRecord,
    UserRecord, UserStatus,
};
use kms_core::token_format::TokenPrefix;
use kms_core::{
    AppSecurity, AppStatus, Application, AuditEvent, Permission, Role, RoleName, Scope, Timestamp,
    TokenLimits, TokenStatus,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Columns of `apps`, in the order [`app`] reads them and writes bind them.
/// A macro, so statements can be built with `concat!` at compile time.
macro_rules! app_columns {
    () => {
        "id, name, token_prefix, status, created_at, ip_allow, require_signed_requests, \
         signing_secret, usage_price"
    };
}
pub(crate) use app_columns;

/// Columns of `tokens`, in the order [`token`] reads them and writes bind them (`1` to
/// `18`).
macro_rules! token_columns {
    () => {
        "id, app_id, name, secret_hash, start, status, created_at, expires_at, revoked_at, \
         scopes, roles, metadata, limits, uses, rotated_from, rotated_to, grants, last_used_at"
    };
}
pub(crate) use token_columns;

/// Columns of `signing_keys`, in the order [`signing_key`] reads them and writes bind them.
macro_rules! signing_key_columns {
    () => {
        "kid, algorithm, state, created_at, verify_until, retired_at, public_key, sealed_private"
    };
}
pub(crate) use signing_key_columns;

/// Columns of `refresh_tokens`, in the order [`refresh`] reads them and writes bind them.
macro_rules! refresh_columns {
    () => {
        "id, family_id, token_id, app_id, secret_hash, scope, audience, status, created_at, \
         expires_at, spent_at"
    };
}
pub(crate) use refresh_columns;

/// Columns of `audit_events`, in the order [`audit`] reads them and writes bind them.
macro_rules! audit_columns {
    () => {
        "seq, at, actor, action, target, outcome, ip, request_id, app_id, details, prev_hash, hash, \
         subject, sealed_personal"
    };
}
pub(crate) use audit_columns;

/// Columns of `users`, in the order [`user`] reads them and writes bind them (`1` to `10`).
/// Reads add one more, the user's identities as a JSON array of `{idp_id, subject}` objects
/// built from `user_identities` (each store writes that subquery in its own SQL).
macro_rules! user_columns {
    () => {
        "id, app_id, email, name, status, roles, mapped_roles, grants, created_at, last_login_at"
    };
}
pub(crate) use user_columns;

/// Columns of `idps`, in the order [`idp`] reads them and writes bind them.
macro_rules! idp_columns {
    () => {
        "id, app_id, slug, status, created_at, role_map, default_roles, email_domains, protocol"
    };
}
pub(crate) use idp_columns;

/// Columns of `login_attempts`, in the order [`login_attempt`] reads them and writes bind
/// them.
macro_rules! login_attempt_columns {
    () => {
        "id, idp_id, browser_hash, nonce, sealed_pkce_verifier, saml_request_id, return_to, \
         created_at, expires_at"
    };
}
pub(crate) use login_attempt_columns;

/// Columns of `sessions`, in the order [`session`] reads them and writes bind them (`1` to
/// `14`).
macro_rules! session_columns {
    () => {
        "id, user_id, app_id, idp_id, secret_hash, created_at, expires_at, last_used_at, ip, \
         user_agent, revoked_at, revoke_reason, sealed_upstream_refresh, revalidated_at"
    };
}
pub(crate) use session_columns;

/// Columns of `person_keys`, in the order [`person_key`] reads them and writes bind them.
macro_rules! person_key_columns {
    () => {
        "subject, stored_key, created_at"
    };
}
pub(crate) use person_key_columns;

/// Typed access to the columns of one result row, by position.
pub(crate) trait ColumnRead {
    fn text(&self, idx: usize) -> Result<String, StoreError>;
    fn opt_text(&self, idx: usize) -> Result<Option<String>, StoreError>;
    fn int(&self, idx: usize) -> Result<i64, StoreError>;
    fn opt_int(&self, idx: usize) -> Result<Option<i64>, StoreError>;
    fn bytes(&self, idx: usize) -> Result<Vec<u8>, StoreError>;
    fn opt_bytes(&self, idx: usize) -> Result<Option<Vec<u8>>, StoreError>;
    /// A yes/no column (an integer in SQLite, a boolean in PostgreSQL).
    fn flag(&self, idx: usize) -> Result<bool, StoreError>;
}

/// A stored value that does not decode.
pub(crate) fn corrupt(what: &str, problem: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {problem}"))
}

/// Encodes a list or map as JSON text.
pub(crate) fn to_json<T: Serialize + ?Sized>(value: &T, what: &str) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| corrupt(what, e))
}

fn json<T: DeserializeOwned>(
    row: &(impl ColumnRead + ?Sized),
    idx: usize,
    what: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(&row.text(idx)?).map_err(|e| corrupt(what, e))
}

fn time(row: &(impl ColumnRead + ?Sized), idx: usize) -> Result<Timestamp, StoreError> {
    Ok(Timestamp::from_unix(row.int(idx)?))
}

fn opt_time(row: &(impl ColumnRead + ?Sized), idx: usize) -> Result<Option<Timestamp>, StoreError> {
    Ok(row.opt_int(idx)?.map(Timestamp::from_unix))
}

/// A stored counter, which is never negative.
pub(crate) fn counter(n: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| corrupt(what, format!("{n} is negative")))
}

/// A counter as a signed 64-bit database integer; the batch logic has refused values that
/// do not fit.
pub(crate) fn sql_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A page size as a database integer.
pub(crate) fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

pub(crate) fn app(row: &(impl ColumnRead + ?Sized)) -> Result<Application, StoreError> {
    let prefix = row.text(2)?;
    let status = row.text(3)?;
    Ok(Application {
        id: row.text(0)?,
        name: row.text(1)?,
        token_prefix: TokenPrefix::parse(&prefix)
            .map_err(|e| corrupt("application token prefix", e))?,
        status: AppStatus::parse(&status)
            .ok_or_else(|| corrupt("application status", format!("unknown status {status:?}")))?,
        created_at: time(row, 4)?,
        security: AppSecurity {
            ip_allow: json(row, 5, "application allow-list")?,
            require_signed_requests: row.flag(6)?,
            signing_secret: row.opt_bytes(7)?,
        },
        usage_price: row
            .opt_text(8)?
            .map(|p| serde_json::from_str(&p).map_err(|e| corrupt("application usage price", e)))
            .transpose()?,
    })
}

pub(crate) fn token(row: &(impl ColumnRead + ?Sized)) -> Result<TokenRecord, StoreError> {
    let status = row.text(5)?;
    let mut limits: TokenLimits = json(row, 12, "token limits")?;
    limits.uses = row
        .opt_int(13)?
        .map(|n| counter(n, "token uses"))
        .transpose()?;
    Ok(TokenRecord {
        id: row.text(0)?,
        app_id: row.text(1)?,
        name: row.text(2)?,
        secret_hash: row.text(3)?,
        start: row.text(4)?,
        status: TokenStatus::parse(&status)
            .ok_or_else(|| corrupt("token status", format!("unknown status {status:?}")))?,
        created_at: time(row, 6)?,
        expires_at: opt_time(row, 7)?,
        revoked_at: opt_time(row, 8)?,
        scopes: json(row, 9, "token scopes")?,
        roles: json(row, 10, "token roles")?,
        metadata: json(row, 11, "token metadata")?,
        limits,
        rotated_from: row.opt_text(14)?,
        rotated_to: row.opt_text(15)?,
        grants: json(row, 16, "token grants")?,
        last_used_at: opt_time(row, 17)?,
    })
}

/// A permission from `scope, description, implies`.
pub(crate) fn permission(row: &(impl ColumnRead + ?Sized)) -> Result<Permission, StoreError> {
    let scope = row.text(0)?;
    Ok(Permission {
        scope: Scope::parse(&scope).map_err(|e| corrupt("permission scope", e))?,
        description: row.text(1)?,
        implies: json(row, 2, "permission implies")?,
    })
}

/// A role from `name, description, permissions, inherits, grants`.
pub(crate) fn role(row: &(impl ColumnRead + ?Sized)) -> Result<Role, StoreError> {
    let name = row.text(0)?;
    Ok(Role {
        name: RoleName::parse(&name).map_err(|e| corrupt("role name", e))?,
        description: row.text(1)?,
        permissions: json(row, 2, "role permissions")?,
        inherits: json(row, 3, "role inherits")?,
        grants: json(row, 4, "role grants")?,
    })
}

pub(crate) fn signing_key(
    row: &(impl ColumnRead + ?Sized),
) -> Result<SigningKeyRecord, StoreError> {
    let algorithm = row.text(1)?;
    let state = row.text(2)?;
    Ok(SigningKeyRecord {
        kid: row.text(0)?,
        algorithm: KeyAlgorithm::parse(&algorithm).ok_or_else(|| {
            corrupt(
                "signing key algorithm",
                format!("unknown algorithm {algorithm:?}"),
            )
        })?,
        state: KeyState::parse(&state)
            .ok_or_else(|| corrupt("signing key state", format!("unknown state {state:?}")))?,
        created_at: time(row, 3)?,
        verify_until: opt_time(row, 4)?,
        retired_at: opt_time(row, 5)?,
        public_key: row.bytes(6)?,
        sealed_private: row.bytes(7)?,
    })
}

/// A refresh token's status as stored.
pub(crate) fn refresh_status(status: &str) -> Result<RefreshStatus, StoreError> {
    RefreshStatus::parse(status)
        .ok_or_else(|| corrupt("refresh token status", format!("unknown status {status:?}")))
}

pub(crate) fn refresh(row: &(impl ColumnRead + ?Sized)) -> Result<RefreshRecord, StoreError> {
    Ok(RefreshRecord {
        id: row.text(0)?,
        family_id: row.text(1)?,
        token_id: row.text(2)?,
        app_id: row.text(3)?,
        secret_hash: row.text(4)?,
        scope: row.text(5)?,
        audience: row.text(6)?,
        status: refresh_status(&row.text(7)?)?,
        created_at: time(row, 8)?,
        expires_at: time(row, 9)?,
        spent_at: opt_time(row, 10)?,
    })
}

pub(crate) fn audit(row: &(impl ColumnRead + ?Sized)) -> Result<AuditEvent, StoreError> {
    Ok(AuditEvent {
        seq: counter(row.int(0)?, "audit sequence number")?,
        at: time(row, 1)?,
        actor: row.text(2)?,
        action: row.text(3)?,
        target: row.text(4)?,
        outcome: row.text(5)?,
        ip: row.opt_text(6)?,
        request_id: row.opt_text(7)?,
        app_id: row.opt_text(8)?,
        details: json(row, 9, "audit details")?,
        prev_hash: row.text(10)?,
        hash: row.text(11)?,
        subject: row.opt_text(12)?,
        sealed_personal: row.opt_text(13)?,
        personal: None,
    })
}

/// A deny-list entry from `id, expires_at`.
pub(crate) fn revocation(row: &(impl ColumnRead + ?Sized)) -> Result<Revocation, StoreError> {
    Ok(Revocation {
        id: row.text(0)?,
        expires_at: time(row, 1)?,
    })
}

/// A user from [`user_columns`] followed by the identities column.
pub(crate) fn user(row: &(impl ColumnRead + ?Sized)) -> Result<UserRecord, StoreError> {
    let status = row.text(4)?;
    let mut identities: Vec<Identity> = json(row, 10, "user identities")?;
    identities.sort();
    Ok(UserRecord {
        id: row.text(0)?,
        app_id: row.text(1)?,
        email: row.opt_text(2)?,
        name: row.opt_text(3)?,
        status: UserStatus::parse(&status)
            .ok_or_else(|| corrupt("user status", format!("unknown status {status:?}")))?,
        roles: json(row, 5, "user roles")?,
        mapped_roles: json(row, 6, "user mapped roles")?,
        grants: json(row, 7, "user grants")?,
        identities,
        created_at: time(row, 8)?,
        last_login_at: opt_time(row, 9)?,
    })
}

/// An identity provider's status as stored.
fn idp_status(status: &str) -> Result<IdpStatus, StoreError> {
    match status {
        "active" => Ok(IdpStatus::Active),
        "disabled" => Ok(IdpStatus::Disabled),
        _ => Err(corrupt(
            "identity provider status",
            format!("unknown status {status:?}"),
        )),
    }
}

pub(crate) fn idp(row: &(impl ColumnRead + ?Sized)) -> Result<IdpRecord, StoreError> {
    Ok(IdpRecord {
        id: row.text(0)?,
        app_id: row.text(1)?,
        slug: row.text(2)?,
        status: idp_status(&row.text(3)?)?,
        created_at: time(row, 4)?,
        role_map: json(row, 5, "identity provider role map")?,
        default_roles: json(row, 6, "identity provider default roles")?,
        email_domains: json(row, 7, "identity provider email domains")?,
        protocol: json(row, 8, "identity provider protocol")?,
    })
}

pub(crate) fn login_attempt(row: &(impl ColumnRead + ?Sized)) -> Result<LoginAttempt, StoreError> {
    Ok(LoginAttempt {
        id: row.text(0)?,
        idp_id: row.text(1)?,
        browser_hash: row.text(2)?,
        nonce: row.opt_text(3)?,
        sealed_pkce_verifier: row.opt_text(4)?,
        saml_request_id: row.opt_text(5)?,
        return_to: row.opt_text(6)?,
        created_at: time(row, 7)?,
        expires_at: time(row, 8)?,
    })
}

pub(crate) fn session(row: &(impl ColumnRead + ?Sized)) -> Result<SessionRecord, StoreError> {
    Ok(SessionRecord {
        id: row.text(0)?,
        user_id: row.text(1)?,
        app_id: row.text(2)?,
        idp_id: row.text(3)?,
        secret_hash: row.text(4)?,
        created_at: time(row, 5)?,
        expires_at: time(row, 6)?,
        last_used_at: time(row, 7)?,
        ip: row.opt_text(8)?,
        user_agent: row.opt_text(9)?,
        revoked_at: opt_time(row, 10)?,
        revoke_reason: row.opt_text(11)?,
        sealed_upstream_refresh: row.opt_text(12)?,
        revalidated_at: opt_time(row, 13)?,
    })
}

/// The encoded JSON columns of a user.
pub(crate) struct UserColumns {
    pub(crate) roles: String,
    pub(crate) mapped_roles: String,
    pub(crate) grants: String,
}

impl UserColumns {
    pub(crate) fn encode(user: &UserRecord) -> Result<Self, StoreError> {
        Ok(UserColumns {
            roles: to_json(&user.roles, "user roles")?,
            mapped_roles: to_json(&user.mapped_roles, "user mapped roles")?,
            grants: to_json(&user.grants, "user grants")?,
        })
    }
}

/// The encoded JSON columns of an identity provider.
pub(crate) struct IdpColumns {
    pub(crate) role_map: String,
    pub(crate) default_roles: String,
    pub(crate) email_domains: String,
    pub(crate) protocol: String,
}

impl IdpColumns {
    pub(crate) fn encode(idp: &IdpRecord) -> Result<Self, StoreError> {
        Ok(IdpColumns {
            role_map: to_json(&idp.role_map, "identity provider role map")?,
            default_roles: to_json(&idp.default_roles, "identity provider default roles")?,
            email_domains: to_json(&idp.email_domains, "identity provider email domains")?,
            protocol: to_json(&idp.protocol, "identity provider protocol")?,
        })
    }
}

/// The encoded columns of a token that are not stored as they are.
pub(crate) struct TokenColumns {
    pub(crate) scopes: String,
    pub(crate) roles: String,
    pub(crate) metadata: String,
    /// Every limit but `uses`, which has its own column.
    pub(crate) limits: String,
    pub(crate) uses: Option<i64>,
    /// The conditional grants.
    pub(crate) grants: String,
}

impl TokenColumns {
    pub(crate) fn encode(token: &TokenRecord) -> Result<Self, StoreError> {
        let limits = TokenLimits {
            uses: None,
            ..token.limits.clone()
        };
        Ok(TokenColumns {
            scopes: to_json(&token.scopes, "token scopes")?,
            roles: to_json(&token.roles, "token roles")?,
            metadata: to_json(&token.metadata, "token metadata")?,
            limits: to_json(&limits, "token limits")?,
            grants: to_json(&token.grants, "token grants")?,
            uses: token
                .limits
                .uses
                .map(|n| i64::try_from(n).map_err(|_| corrupt("token uses", "counter too large")))
                .transpose()?,
        })
    }
}

/// The grant index rows of a token: `(kind, name)` per scope and role it names, directly
/// or in a conditional grant (so neither can be deleted while a token names it).
pub(crate) fn grants(token: &TokenRecord) -> impl Iterator<Item = (&'static str, &str)> {
    use kms_core::GrantTarget;
    token
        .scopes
        .iter()
        .map(|s| ("scope", s.as_str()))
        .chain(token.roles.iter().map(|r| ("role", r.as_str())))
        .chain(token.grants.iter().map(|g| match &g.target {
            GrantTarget::Scope(s) => ("scope", s.as_str()),
            GrantTarget::Role(r) => ("role", r.as_str()),
        }))
}

/// A person key from [`person_key_columns`].
pub(crate) fn person_key(
    row: &(impl ColumnRead + ?Sized),
) -> Result<kms_core::store::PersonKeyRecord, StoreError> {
    Ok(kms_core::store::PersonKeyRecord {
        subject: row.text(0)?,
        stored_key: row.text(1)?,
        created_at: time(row, 2)?,
    })
}
