//! Model-based test of the stores: random sequences of batches, use-spending and reopening
//! are applied to the memory store, the SQLite store (a real file in a temporary directory,
//! reopened from disk now and then), the PostgreSQL store (a fresh database of the test
//! server, `KMS_TEST_POSTGRES_URL`, reconnected now and then) and a trivial model written here (maps under a mutex,
//! each batch applied to a copy that replaces the state only when every mutation
//! succeeded). After every step they all agree on the outcome and on everything the read
//! side of `Store` shows.
//!
//! Unlike the memory-vs-SQLite differential test, this one catches a mistake the two stores
//! share (both derive their semantics from `batch.rs`), and its records use every field
//! (metadata, limits, allow-lists, sealed secrets, odd text, counters at the SQLite limit),
//! so a field that a store fails to write or read back shows.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, Weak};

use kms_core::store::{
    AppStore, AuditStore, ChangeListener, GrantStore, IdentityStore, KeyStore, Mutation,
    PolicyStore, Store, TokenStore, UseOutcome, AUDIT_ANCHOR_KEY,
};
use kms_core::store::{
    AuditQuery, Identity, IdpProtocol, IdpRecord, IdpStatus, KeyAlgorithm, KeyState, LoginAttempt,
    OidcSettings, Policy, RefreshRecord, RefreshStatus, Revocation, SamlSettings, SessionRecord,
    SessionSelector, SigningKeyRecord, StoreError, TokenRecord, UserRecord, UserStatus,
};
use kms_core::token_format::TokenPrefix;
use kms_core::{
    AppSecurity, AppStatus, Application, AuditEvent, IpNetwork, Permission, RateLimit, Role,
    RoleName, Scope, Timestamp, TokenLimits, TokenStatus,
};
use kms_store::testing::{NoPostgres, ScratchDatabase};
use kms_store::{MemoryStore, PostgresOptions, PostgresStore, SqliteStore};
use proptest::prelude::*;

const APPS: &[&str] = &["app_0", "app_1", "app_2"];
const NAMES: &[&str] = &[
    "one",
    "two",
    "Ünïcødé \u{202e}name",
    "x'; DROP TABLE apps; --",
];
const TOKENS: &[&str] = &["tok_0", "tok_1", "tok_2", "tok_3"];
const SCOPES: &[&str] = &["a", "b", "a.x"];
const ROLES: &[&str] = &["r0", "r1"];
const META_KEYS: &[&str] = &["k0", "k1", AUDIT_ANCHOR_KEY];
const KEYS: &[&str] = &["kid_0", "kid_1", "kid_2"];
const REFRESH: &[&str] = &["rt_0", "rt_1", "rt_2"];
const FAMILIES: &[&str] = &["fam_0", "fam_1"];
const NETWORKS: &[&str] = &["10.0.0.0/8", "192.168.1.7", "::1", "2001:db8::/32"];
const USERS: &[&str] = &["usr_0", "usr_1", "usr_2"];
const IDPS: &[&str] = &["idp_0", "idp_1"];
const SLUGS: &[&str] = &["s0", "s1", "s2"];
const SUBJECTS: &[&str] = &["alice", "bob", "Ünï 'x'"];
const GROUPS: &[&str] = &["admins", "staff"];
const ATTEMPTS: &[&str] = &["la_0", "la_1"];
const SESSIONS: &[&str] = &["ses_0", "ses_1", "ses_2"];
const REPLAY: &[&str] = &["r0", "r1"];
/// The largest counter a store keeps (SQLite integers are signed 64-bit).
const MAX_COUNTER: u64 = i64::MAX as u64;

// ---------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------

fn pick(pool: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::sample::select(pool).prop_map(str::to_owned)
}

fn time() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        4 => (0i64..6).prop_map(Timestamp::from_unix),
        1 => (0i64..4_102_444_800).prop_map(Timestamp::from_unix),
    ]
}

/// Printable text, any script.
fn text() -> impl Strategy<Value = String> {
    "\\PC{0,12}"
}

/// Counters: small ones, and both sides of the largest a store keeps.
fn counter() -> impl Strategy<Value = u64> {
    prop_oneof![
        12 => 0u64..4,
        1 => Just(MAX_COUNTER),
        1 => Just(MAX_COUNTER + 1),
        1 => Just(u64::MAX),
    ]
}

fn networks() -> impl Strategy<Value = Vec<IpNetwork>> {
    proptest::sample::subsequence(NETWORKS, 0..=2)
        .prop_map(|v| v.iter().map(|n| IpNetwork::parse(n).unwrap()).collect())
}

fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        text().prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(serde_json::Value::from),
            proptest::collection::btree_map("[a-z]{1,3}", inner, 0..3)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn app() -> impl Strategy<Value = Application> {
    (
        pick(APPS),
        pick(NAMES),
        any::<bool>(),
        time(),
        networks(),
        any::<bool>(),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..6)),
    )
        .prop_map(
            |(id, name, active, created_at, ip_allow, signed, secret)| Application {
                id,
                name,
                token_prefix: TokenPrefix::parse("kms").unwrap(),
                status: if active {
                    AppStatus::Active
                } else {
                    AppStatus::Disabled
                },
                created_at,
                usage_price: None,
                security: AppSecurity {
                    ip_allow,
                    require_signed_requests: signed,
                    signing_secret: secret,
                },
            },
        )
}

fn token() -> impl Strategy<Value = TokenRecord> {
    (
        (
            pick(TOKENS),
            pick(APPS),
            text(),
            any::<bool>(),
            time(),
            proptest::option::of(time()),
            proptest::option::of(time()),
        ),
        (
            proptest::sample::subsequence(SCOPES, 0..=2),
            proptest::sample::subsequence(ROLES, 0..=2),
            proptest::collection::btree_map("[a-z]{1,4}", json(), 0..3),
            proptest::option::of(counter()),
            proptest::option::of((any::<u32>(), any::<u32>())),
            networks(),
            proptest::option::of(pick(TOKENS)),
            proptest::option::of(pick(TOKENS)),
        ),
    )
        .prop_map(
            |(
                (id, app_id, name, active, created_at, expires_at, revoked_at),
                (scopes, roles, metadata, uses, ratelimit, ip_allow, from, to),
            )| TokenRecord {
                id,
                app_id,
                name,
                secret_hash: "$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA".to_owned(),
                start: "kms_x".to_owned(),
                status: if active {
                    TokenStatus::Active
                } else {
                    TokenStatus::Revoked
                },
                created_at,
                expires_at,
                revoked_at,
                scopes: scopes.iter().map(|s| Scope::parse(s).unwrap()).collect(),
                roles: roles.iter().map(|r| RoleName::parse(r).unwrap()).collect(),
                grants: Vec::new(),
                metadata: metadata.into_iter().collect(),
                limits: TokenLimits {
                    ratelimit: ratelimit
                        .map(|(limit, per_seconds)| RateLimit { limit, per_seconds }),
                    uses,
                    ip_allow,
                },
                rotated_from: from,
                rotated_to: to,
                last_used_at: None,
            },
        )
}

fn refresh() -> impl Strategy<Value = RefreshRecord> {
    (
        pick(REFRESH),
        pick(FAMILIES),
        pick(TOKENS),
        pick(APPS),
        text(),
        time(),
        time(),
    )
        .prop_map(
            |(id, family_id, token_id, app_id, scope, created_at, expires_at)| RefreshRecord {
                id,
                family_id,
                token_id,
                app_id,
                secret_hash: "ab".repeat(32),
                scope,
                audience: "kms".to_owned(),
                status: RefreshStatus::Active,
                created_at,
                expires_at,
                spent_at: None,
            },
        )
}

fn scope() -> impl Strategy<Value = Scope> {
    proptest::sample::select(SCOPES).prop_map(|s| Scope::parse(s).unwrap())
}

fn role_name() -> impl Strategy<Value = RoleName> {
    proptest::sample::select(ROLES).prop_map(|r| RoleName::parse(r).unwrap())
}

fn audit_event() -> impl Strategy<Value = AuditEvent> {
    (
        prop_oneof![4 => 1u64..6, 1 => counter()],
        time(),
        pick(&["operator", "tok_0", "system"]),
        pick(&["token.create", "role.put"]),
        text(),
        proptest::option::of(pick(&["127.0.0.1", "::1"])),
        proptest::option::of(text()),
        proptest::option::of(pick(APPS)),
        json(),
        "[0-9a-f]{0,8}",
    )
        .prop_map(
            |(seq, at, actor, action, target, ip, request_id, app_id, details, hash)| AuditEvent {
                seq,
                at,
                actor,
                action,
                target,
                outcome: "success".to_owned(),
                ip,
                request_id,
                app_id,
                details,
                prev_hash: hash.clone(),
                hash,
                subject: None,
                sealed_personal: None,
                personal: None,
            },
        )
}

fn roles() -> impl Strategy<Value = Vec<RoleName>> {
    proptest::sample::subsequence(ROLES, 0..=2)
        .prop_map(|v| v.iter().map(|r| RoleName::parse(r).unwrap()).collect())
}

fn user() -> impl Strategy<Value = UserRecord> {
    (
        (
            pick(USERS),
            pick(APPS),
            proptest::option::of(text()),
            proptest::option::of(text()),
            any::<bool>(),
        ),
        (
            roles(),
            roles(),
            any::<bool>(),
            proptest::collection::vec((pick(IDPS), pick(SUBJECTS)), 0..3),
            time(),
            proptest::option::of(time()),
        ),
    )
        .prop_map(
            |(
                (id, app_id, email, name, active),
                (roles, mapped_roles, conditional, identities, created_at, last_login_at),
            )| UserRecord {
                id,
                app_id,
                email,
                name,
                status: if active {
                    UserStatus::Active
                } else {
                    UserStatus::Disabled
                },
                roles,
                mapped_roles,
                grants: if conditional {
                    vec![serde_json::from_value(
                        serde_json::json!({"scope": "a", "when": "context.region == \"eu\""}),
                    )
                    .unwrap()]
                } else {
                    Vec::new()
                },
                identities: identities
                    .into_iter()
                    .map(|(idp_id, subject)| Identity { idp_id, subject })
                    .collect(),
                created_at,
                last_login_at,
            },
        )
}

fn protocol() -> impl Strategy<Value = IdpProtocol> {
    prop_oneof![
        (
            text(),
            proptest::option::of(text()),
            proptest::option::of(text()),
            json(),
            time()
        )
            .prop_map(|(issuer, secret, groups_claim, discovery, discovered_at)| {
                IdpProtocol::Oidc(OidcSettings {
                    issuer,
                    client_id: "client".to_owned(),
                    sealed_client_secret: secret,
                    scopes: vec!["openid".to_owned()],
                    groups_claim,
                    algorithms: vec!["RS256".to_owned()],
                    discovery,
                    discovered_at,
                })
            }),
        (text(), proptest::option::of(text()), any::<bool>()).prop_map(
            |(idp_metadata_xml, groups_attribute, allow_idp_initiated)| {
                IdpProtocol::Saml(SamlSettings {
                    idp_metadata_xml,
                    groups_attribute,
                    allow_idp_initiated,
                })
            }
        ),
    ]
}

fn idp() -> impl Strategy<Value = IdpRecord> {
    (
        pick(IDPS),
        pick(APPS),
        pick(SLUGS),
        any::<bool>(),
        time(),
        proptest::collection::btree_map(pick(GROUPS), roles(), 0..3),
        roles(),
        proptest::collection::vec("[a-z]{1,4}\\.com", 0..2),
        protocol(),
    )
        .prop_map(
            |(
                id,
                app_id,
                slug,
                active,
                created_at,
                role_map,
                default_roles,
                email_domains,
                protocol,
            )| {
                IdpRecord {
                    id,
                    app_id,
                    slug,
                    status: if active {
                        IdpStatus::Active
                    } else {
                        IdpStatus::Disabled
                    },
                    created_at,
                    role_map,
                    default_roles,
                    email_domains,
                    protocol,
                }
            },
        )
}

fn attempt() -> impl Strategy<Value = LoginAttempt> {
    (
        pick(ATTEMPTS),
        pick(IDPS),
        proptest::option::of(text()),
        proptest::option::of(text()),
        proptest::option::of(text()),
        proptest::option::of(text()),
        time(),
        time(),
    )
        .prop_map(
            |(id, idp_id, nonce, verifier, request_id, return_to, created_at, expires_at)| {
                LoginAttempt {
                    id,
                    idp_id,
                    browser_hash: "cd".repeat(32),
                    nonce,
                    sealed_pkce_verifier: verifier,
                    saml_request_id: request_id,
                    return_to,
                    created_at,
                    expires_at,
                }
            },
        )
}

fn session() -> impl Strategy<Value = SessionRecord> {
    (
        (
            pick(SESSIONS),
            pick(USERS),
            pick(APPS),
            pick(IDPS),
            time(),
            time(),
            time(),
        ),
        (
            proptest::option::of(pick(&["127.0.0.1", "::1"])),
            proptest::option::of(text()),
            proptest::option::of(time()),
            proptest::option::of(pick(&["logout", "revoked"])),
            proptest::option::of(text()),
            proptest::option::of(time()),
        ),
    )
        .prop_map(
            |(
                (id, user_id, app_id, idp_id, created_at, expires_at, last_used_at),
                (ip, user_agent, revoked_at, reason, sealed, revalidated_at),
            )| SessionRecord {
                id,
                user_id,
                app_id,
                idp_id,
                secret_hash: "ef".repeat(32),
                created_at,
                expires_at,
                last_used_at,
                ip,
                user_agent,
                revoked_at,
                revoke_reason: reason,
                sealed_upstream_refresh: sealed,
                revalidated_at,
            },
        )
}

fn selector() -> impl Strategy<Value = SessionSelector> {
    prop_oneof![
        pick(SESSIONS).prop_map(SessionSelector::Id),
        pick(USERS).prop_map(SessionSelector::User),
        pick(IDPS).prop_map(SessionSelector::Idp),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => (pick(META_KEYS), text()).prop_map(|(key, value)| Mutation::CreateMeta { key, value }),
        2 => app().prop_map(Mutation::InsertApp),
        1 => app().prop_map(Mutation::UpdateApp),
        1 => pick(APPS).prop_map(Mutation::DeleteApp),
        1 => (scope(), text(), proptest::sample::subsequence(SCOPES, 0..=2)).prop_map(
            |(scope, description, implies)| Mutation::InsertPermission(Permission {
                scope,
                description,
                implies: implies.iter().map(|s| Scope::parse(s).unwrap()).collect(),
            })
        ),
        1 => scope().prop_map(Mutation::DeletePermission),
        1 => (
            role_name(),
            text(),
            proptest::sample::subsequence(SCOPES, 0..=2),
            proptest::sample::subsequence(ROLES, 0..=2)
        )
            .prop_map(|(name, description, perms, inherits)| {
                Mutation::PutRole(Role {
                    grants: Vec::new(),
                    name,
                    description,
                    permissions: perms.iter().map(|s| Scope::parse(s).unwrap()).collect(),
                    inherits: inherits.iter().map(|r| RoleName::parse(r).unwrap()).collect(),
                })
            }),
        1 => role_name().prop_map(Mutation::DeleteRole),
        3 => token().prop_map(Mutation::InsertToken),
        2 => token().prop_map(Mutation::UpdateToken),
        1 => pick(TOKENS).prop_map(Mutation::DeleteToken),
        1 => refresh().prop_map(Mutation::InsertRefreshToken),
        1 => (pick(REFRESH), time()).prop_map(|(id, at)| Mutation::SpendRefreshToken { id, at }),
        1 => pick(FAMILIES).prop_map(Mutation::RevokeRefreshFamily),
        1 => (pick(&["jti:a", "jti:b", "family:fam_0"]), time())
            .prop_map(|(id, expires_at)| Mutation::PutRevocation(Revocation { id, expires_at })),
        1 => time().prop_map(|before| Mutation::PurgeExpired { before }),
        1 => (
            pick(KEYS),
            time(),
            0u8..3,
            proptest::option::of(time()),
            proptest::option::of(time()),
            proptest::collection::vec(any::<u8>(), 0..4),
        )
            .prop_map(|(kid, created_at, state, verify_until, retired_at, bytes)| {
                Mutation::PutSigningKey(SigningKeyRecord {
                    kid,
                    algorithm: KeyAlgorithm::EdDSA,
                    state: [KeyState::Active, KeyState::VerifyOnly, KeyState::Retired]
                        [state as usize],
                    created_at,
                    verify_until,
                    retired_at,
                    public_key: bytes.clone(),
                    sealed_private: bytes.into_iter().rev().collect(),
                })
            }),
        2 => audit_event().prop_map(Mutation::AppendAudit),
        1 => (0u64..5, "[0-9a-f]{0,8}").prop_map(|(through_seq, anchor_hash)| Mutation::PruneAudit {
            through_seq,
            anchor_hash,
        }),
        3 => user().prop_map(Mutation::PutUser),
        1 => pick(USERS).prop_map(Mutation::DeleteUser),
        2 => idp().prop_map(Mutation::PutIdp),
        1 => pick(IDPS).prop_map(Mutation::DeleteIdp),
        1 => attempt().prop_map(Mutation::InsertLoginAttempt),
        1 => pick(ATTEMPTS).prop_map(Mutation::ConsumeLoginAttempt),
        2 => session().prop_map(Mutation::InsertSession),
        1 => session().prop_map(Mutation::UpdateSession),
        1 => (pick(SESSIONS), time()).prop_map(|(id, at)| Mutation::TouchSession { id, at }),
        1 => (selector(), time(), pick(&["logout", "idp_deleted"]))
            .prop_map(|(selector, at, reason)| Mutation::RevokeSessions { selector, at, reason }),
        1 => (pick(REPLAY), time())
            .prop_map(|(id, expires_at)| Mutation::ClaimReplay { id, expires_at }),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Apply(Vec<Mutation>),
    ConsumeUse(String),
    /// Closes the SQLite store and opens the file again.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => proptest::collection::vec(mutation(), 1..4).prop_map(Op::Apply),
        2 => pick(TOKENS).prop_map(Op::ConsumeUse),
        1 => Just(Op::Reopen),
    ]
}

// ---------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default)]
struct State {
    /// Usage buckets: (application, bucket start, token, code) → count.
    usage: BTreeMap<(String, i64, String, String), u64>,
    meta: BTreeMap<String, String>,
    apps: BTreeMap<String, Application>,
    tokens: BTreeMap<String, TokenRecord>,
    permissions: BTreeMap<Scope, Permission>,
    roles: BTreeMap<RoleName, Role>,
    /// In order of first insertion; a replaced key keeps its place.
    keys: Vec<SigningKeyRecord>,
    refresh: BTreeMap<String, RefreshRecord>,
    revocations: BTreeMap<String, Revocation>,
    audit: BTreeMap<u64, AuditEvent>,
    /// Users, their identities sorted and each once.
    users: BTreeMap<String, UserRecord>,
    idps: BTreeMap<String, IdpRecord>,
    attempts: BTreeMap<String, LoginAttempt>,
    sessions: BTreeMap<String, SessionRecord>,
    replay: BTreeMap<String, Timestamp>,
}

/// A `Conflict`, as the model cannot know the stores' wording.
fn conflict() -> StoreError {
    StoreError::Conflict(String::new())
}

impl State {
    fn apply(&mut self, m: &Mutation) -> Result<(), StoreError> {
        match m {
            Mutation::CreateMeta { key, value } => {
                if self.meta.contains_key(key) {
                    return Err(conflict());
                }
                self.meta.insert(key.clone(), value.clone());
            }
            Mutation::InsertApp(app) => {
                if self.apps.contains_key(&app.id) || self.apps.values().any(|a| a.name == app.name)
                {
                    return Err(conflict());
                }
                self.apps.insert(app.id.clone(), app.clone());
            }
            Mutation::UpdateApp(app) => {
                if !self.apps.contains_key(&app.id)
                    || self
                        .apps
                        .values()
                        .any(|a| a.name == app.name && a.id != app.id)
                {
                    return Err(conflict());
                }
                self.apps.insert(app.id.clone(), app.clone());
            }
            Mutation::DeleteApp(id) => {
                self.apps.remove(id);
                self.tokens.retain(|_, t| t.app_id != *id);
                let idps: Vec<String> = self
                    .idps
                    .values()
                    .filter(|i| i.app_id == *id)
                    .map(|i| i.id.clone())
                    .collect();
                for idp in idps {
                    self.apply(&Mutation::DeleteIdp(idp))?;
                }
                let users: Vec<String> = self
                    .users
                    .values()
                    .filter(|u| u.app_id == *id)
                    .map(|u| u.id.clone())
                    .collect();
                for user in users {
                    self.apply(&Mutation::DeleteUser(user))?;
                }
                self.sessions.retain(|_, s| s.app_id != *id);
            }
            Mutation::InsertPermission(p) => {
                if self.permissions.contains_key(&p.scope) {
                    return Err(conflict());
                }
                self.permissions.insert(p.scope.clone(), p.clone());
            }
            Mutation::DeletePermission(s) => drop(self.permissions.remove(s)),
            Mutation::PutRole(r) => drop(self.roles.insert(r.name.clone(), r.clone())),
            Mutation::DeleteRole(n) => drop(self.roles.remove(n)),
            Mutation::InsertToken(t) | Mutation::UpdateToken(t) => {
                let insert = matches!(m, Mutation::InsertToken(_));
                if !self.apps.contains_key(&t.app_id)
                    || t.limits.uses.is_some_and(|u| u > MAX_COUNTER)
                    || self.tokens.contains_key(&t.id) == insert
                {
                    return Err(conflict());
                }
                self.tokens.insert(t.id.clone(), t.clone());
            }
            Mutation::DeleteToken(id) => drop(self.tokens.remove(id)),
            Mutation::PutSigningKey(k) => match self.keys.iter_mut().find(|x| x.kid == k.kid) {
                Some(slot) => *slot = k.clone(),
                None => self.keys.push(k.clone()),
            },
            Mutation::InsertRefreshToken(r) => {
                if self.refresh.contains_key(&r.id) {
                    return Err(conflict());
                }
                self.refresh.insert(r.id.clone(), r.clone());
            }
            Mutation::SpendRefreshToken { id, at } => match self.refresh.get_mut(id) {
                Some(r) if r.status == RefreshStatus::Active => {
                    r.status = RefreshStatus::Spent;
                    r.spent_at = Some(*at);
                }
                _ => return Err(conflict()),
            },
            Mutation::RevokeRefreshFamily(family) => {
                for r in self.refresh.values_mut() {
                    if r.family_id == *family {
                        r.status = RefreshStatus::Revoked;
                    }
                }
            }
            Mutation::PutRevocation(r) => drop(self.revocations.insert(r.id.clone(), r.clone())),
            Mutation::PurgeExpired { before } => {
                self.revocations.retain(|_, r| r.expires_at >= *before);
                self.refresh.retain(|_, r| r.expires_at >= *before);
                self.attempts.retain(|_, a| a.expires_at >= *before);
                self.replay.retain(|_, expires_at| *expires_at >= *before);
            }
            Mutation::PutUser(u) => {
                let taken = u.identities.iter().any(|i| {
                    self.users
                        .values()
                        .any(|other| other.id != u.id && other.identities.contains(i))
                });
                if !self.apps.contains_key(&u.app_id) || taken {
                    return Err(conflict());
                }
                let mut u = u.clone();
                u.identities.sort();
                u.identities.dedup();
                self.users.insert(u.id.clone(), u);
            }
            Mutation::DeleteUser(id) => {
                self.users.remove(id);
                self.sessions.retain(|_, s| s.user_id != *id);
            }
            Mutation::PutIdp(i) => {
                if !self.apps.contains_key(&i.app_id)
                    || self.idps.values().any(|o| o.slug == i.slug && o.id != i.id)
                {
                    return Err(conflict());
                }
                self.idps.insert(i.id.clone(), i.clone());
            }
            Mutation::DeleteIdp(id) => {
                self.idps.remove(id);
                for u in self.users.values_mut() {
                    u.identities.retain(|i| i.idp_id != *id);
                }
                self.attempts.retain(|_, a| a.idp_id != *id);
            }
            Mutation::InsertLoginAttempt(a) => {
                if self.attempts.contains_key(&a.id) {
                    return Err(conflict());
                }
                self.attempts.insert(a.id.clone(), a.clone());
            }
            Mutation::ConsumeLoginAttempt(id) => {
                if self.attempts.remove(id).is_none() {
                    return Err(conflict());
                }
            }
            Mutation::InsertSession(ses) => {
                if !self.users.contains_key(&ses.user_id) || self.sessions.contains_key(&ses.id) {
                    return Err(conflict());
                }
                self.sessions.insert(ses.id.clone(), ses.clone());
            }
            Mutation::UpdateSession(ses) => {
                if !self.sessions.contains_key(&ses.id) {
                    return Err(conflict());
                }
                self.sessions.insert(ses.id.clone(), ses.clone());
            }
            Mutation::TouchSession { id, at } => {
                if let Some(ses) = self.sessions.get_mut(id) {
                    if ses.revoked_at.is_none() && ses.last_used_at < *at {
                        ses.last_used_at = *at;
                    }
                }
            }
            Mutation::RevokeSessions {
                selector,
                at,
                reason,
            } => {
                for ses in self.sessions.values_mut() {
                    let selected = match selector {
                        SessionSelector::Id(id) => ses.id == *id,
                        SessionSelector::User(id) => ses.user_id == *id,
                        SessionSelector::Idp(id) => ses.idp_id == *id,
                    };
                    if selected && ses.revoked_at.is_none() {
                        ses.revoked_at = Some(*at);
                        ses.revoke_reason = Some(reason.clone());
                    }
                }
            }
            Mutation::ClaimReplay { id, expires_at } => {
                if self.replay.contains_key(id) {
                    return Err(conflict());
                }
                self.replay.insert(id.clone(), *expires_at);
            }
            Mutation::PutMeta { key, value } => {
                self.meta.insert(key.clone(), value.clone());
            }
            Mutation::AppendAudit(e) => {
                if e.seq > MAX_COUNTER || self.audit.contains_key(&e.seq) {
                    return Err(conflict());
                }
                self.audit.insert(e.seq, e.clone());
            }
            Mutation::PruneAudit {
                through_seq,
                anchor_hash,
            } => {
                self.audit.retain(|seq, _| seq > through_seq);
                self.meta.insert(
                    AUDIT_ANCHOR_KEY.to_owned(),
                    format!("{through_seq}:{anchor_hash}"),
                );
            }
            other => panic!("the model does not know {other:?}"),
        }
        Ok(())
    }
}

/// The model as a `Store`, so that one function reads all three.
#[derive(Default)]
struct Model(Mutex<State>);

impl Model {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }
}

impl AppStore for Model {
    fn get_app(&self, id: &str) -> Result<Option<Application>, StoreError> {
        Ok(self.state().apps.get(id).cloned())
    }
    fn list_apps(&self, after: Option<&str>, limit: usize) -> Result<Vec<Application>, StoreError> {
        let s = self.state();
        Ok(s.apps
            .values()
            .filter(|a| after.is_none_or(|after| a.id.as_str() > after))
            .take(limit)
            .cloned()
            .collect())
    }
}

impl TokenStore for Model {
    fn get_token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self.state().tokens.get(id).cloned())
    }
    fn list_tokens(
        &self,
        app_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        let s = self.state();
        Ok(s.tokens
            .values()
            .filter(|t| t.app_id == app_id && after.is_none_or(|after| t.id.as_str() > after))
            .take(limit)
            .cloned()
            .collect())
    }
    fn scope_is_granted(&self, scope: &Scope) -> Result<bool, StoreError> {
        Ok(self
            .state()
            .tokens
            .values()
            .any(|t| t.scopes.contains(scope)))
    }
    fn role_is_granted(&self, role: &RoleName) -> Result<bool, StoreError> {
        Ok(self.state().tokens.values().any(|t| t.roles.contains(role)))
    }
    fn expired_tokens(
        &self,
        before: Timestamp,
        limit: usize,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        let s = self.state();
        Ok(s.tokens
            .values()
            .filter(|t| t.expires_at.is_some_and(|e| e < before))
            .take(limit)
            .cloned()
            .collect())
    }
    fn consume_use(&self, id: &str) -> Result<UseOutcome, StoreError> {
        let mut s = self.state();
        let Some(t) = s.tokens.get_mut(id) else {
            return Ok(UseOutcome::Missing);
        };
        Ok(match t.limits.uses {
            None => UseOutcome::Unlimited,
            Some(0) => UseOutcome::Exhausted,
            Some(n) => {
                t.limits.uses = Some(n - 1);
                UseOutcome::Remaining(n - 1)
            }
        })
    }
}

impl PolicyStore for Model {
    fn load_policy(&self) -> Result<Policy, StoreError> {
        let s = self.state();
        Ok(Policy {
            permissions: s.permissions.clone(),
            roles: s.roles.clone(),
        })
    }
}

impl KeyStore for Model {
    fn list_signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        let mut keys = self.state().keys.clone();
        // Oldest first; among equal times, in order of first insertion (a stable sort).
        keys.sort_by_key(|k| k.created_at);
        Ok(keys)
    }
}

impl GrantStore for Model {
    fn get_refresh_token(&self, id: &str) -> Result<Option<RefreshRecord>, StoreError> {
        Ok(self.state().refresh.get(id).cloned())
    }
    fn list_revocations(&self) -> Result<Vec<Revocation>, StoreError> {
        Ok(self.state().revocations.values().cloned().collect())
    }
}

impl AuditStore for Model {
    fn last_audit_event(&self) -> Result<Option<AuditEvent>, StoreError> {
        Ok(self.state().audit.values().next_back().cloned())
    }
    fn list_audit(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let s = self.state();
        Ok(s.audit
            .values()
            .rev()
            .filter(|e| q.before_seq.is_none_or(|b| e.seq < b))
            .filter(|e| q.action.as_ref().is_none_or(|a| *a == e.action))
            .filter(|e| q.actor.as_ref().is_none_or(|a| *a == e.actor))
            .filter(|e| q.since.is_none_or(|t| e.at >= t))
            .filter(|e| q.app_id.is_none() || q.app_id == e.app_id)
            .take(q.limit)
            .cloned()
            .collect())
    }
    fn audit_after(&self, after_seq: u64, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        let s = self.state();
        Ok(s.audit
            .range((Bound::Excluded(after_seq), Bound::Unbounded))
            .take(limit)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl IdentityStore for Model {
    fn get_user(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        Ok(self.state().users.get(id).cloned())
    }
    fn list_users(
        &self,
        app_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<UserRecord>, StoreError> {
        let s = self.state();
        Ok(s.users
            .values()
            .filter(|u| u.app_id == app_id && after.is_none_or(|after| u.id.as_str() > after))
            .take(limit)
            .cloned()
            .collect())
    }
    fn user_by_identity(
        &self,
        idp_id: &str,
        subject: &str,
    ) -> Result<Option<UserRecord>, StoreError> {
        let wanted = Identity {
            idp_id: idp_id.to_owned(),
            subject: subject.to_owned(),
        };
        let s = self.state();
        Ok(s.users
            .values()
            .find(|u| u.identities.contains(&wanted))
            .cloned())
    }
    fn role_is_held_by_users(&self, role: &RoleName) -> Result<bool, StoreError> {
        let s = self.state();
        Ok(s.users
            .values()
            .any(|u| u.roles.contains(role) || u.mapped_roles.contains(role))
            || s.idps.values().any(|i| {
                i.default_roles.contains(role) || i.role_map.values().any(|r| r.contains(role))
            }))
    }
    fn get_idp(&self, id: &str) -> Result<Option<IdpRecord>, StoreError> {
        Ok(self.state().idps.get(id).cloned())
    }
    fn idp_by_slug(&self, slug: &str) -> Result<Option<IdpRecord>, StoreError> {
        Ok(self.state().idps.values().find(|i| i.slug == slug).cloned())
    }
    fn list_idps(&self, app_id: Option<&str>) -> Result<Vec<IdpRecord>, StoreError> {
        let s = self.state();
        Ok(s.idps
            .values()
            .filter(|i| app_id.is_none_or(|a| i.app_id == a))
            .cloned()
            .collect())
    }
    fn get_login_attempt(&self, id: &str) -> Result<Option<LoginAttempt>, StoreError> {
        Ok(self.state().attempts.get(id).cloned())
    }
    fn get_session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.state().sessions.get(id).cloned())
    }
    fn list_sessions(
        &self,
        user_id: &str,
        now: Timestamp,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let s = self.state();
        let mut live: Vec<SessionRecord> = s
            .sessions
            .values()
            .filter(|x| x.user_id == user_id && x.revoked_at.is_none() && x.expires_at > now)
            .cloned()
            .collect();
        live.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        Ok(live)
    }
    fn sealed_identity_records(
        &self,
    ) -> Result<kms_core::store::SealedIdentityRecords, StoreError> {
        let s = self.state();
        Ok(kms_core::store::SealedIdentityRecords {
            login_attempts: s
                .attempts
                .values()
                .filter(|a| a.sealed_pkce_verifier.is_some())
                .cloned()
                .collect(),
            sessions: s
                .sessions
                .values()
                .filter(|x| x.sealed_upstream_refresh.is_some())
                .cloned()
                .collect(),
        })
    }
}

impl kms_core::store::UsageStore for Model {
    fn add_usage(
        &self,
        counts: &[kms_core::store::UsageCount],
        touches: &[kms_core::store::TokenTouch],
    ) -> Result<(), StoreError> {
        let mut s = self.state();
        for c in counts {
            let key = (
                c.app_id.clone(),
                c.bucket_start.unix(),
                c.token_id.clone(),
                c.code.clone(),
            );
            *s.usage.entry(key).or_default() += c.count;
        }
        for t in touches {
            if let Some(token) = s.tokens.get_mut(&t.token_id) {
                token.last_used_at = token.last_used_at.max(Some(t.at));
            }
        }
        Ok(())
    }

    fn usage(
        &self,
        subject: kms_core::store::UsageSubject<'_>,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<kms_core::store::UsageRow>, StoreError> {
        use kms_core::store::UsageSubject;
        let mut sums: BTreeMap<(i64, String), u64> = BTreeMap::new();
        for ((app, start, token, code), n) in &self.state().usage {
            let hit = match subject {
                UsageSubject::App(id) => app == id,
                UsageSubject::Token(id) => token == id,
            };
            if hit && (from.unix()..to.unix()).contains(start) {
                *sums.entry((*start, code.clone())).or_default() += n;
            }
        }
        Ok(sums
            .into_iter()
            .map(|((start, code), count)| kms_core::store::UsageRow {
                bucket_start: Timestamp::from_unix(start),
                code,
                count,
            })
            .collect())
    }

    fn usage_buckets_before(&self, before: Timestamp) -> Result<u64, StoreError> {
        Ok(self
            .state()
            .usage
            .keys()
            .filter(|k| k.1 < before.unix())
            .count() as u64)
    }
}

impl kms_core::store::PrivacyStore for Model {
    // The model applies no person-key mutation (it panics on mutations it does not know),
    // so it never holds a person key.
    fn get_person_key(
        &self,
        _subject: &str,
    ) -> Result<Option<kms_core::store::PersonKeyRecord>, StoreError> {
        Ok(None)
    }
    fn list_person_keys(
        &self,
        _after: Option<&str>,
        _limit: usize,
    ) -> Result<Vec<kms_core::store::PersonKeyRecord>, StoreError> {
        Ok(Vec::new())
    }
    fn audit_concerning(
        &self,
        ids: &[String],
        before_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let named = |v: &str| ids.iter().any(|id| id == v);
        Ok(self
            .state()
            .audit
            .values()
            .rev()
            .filter(|e| before_seq.is_none_or(|b| e.seq < b))
            .filter(|e| {
                e.subject.as_deref().is_some_and(named) || named(&e.actor) || named(&e.target)
            })
            .take(limit)
            .cloned()
            .collect())
    }
    fn user_sessions(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let mut all: Vec<SessionRecord> = self
            .state()
            .sessions
            .values()
            .filter(|x| x.user_id == user_id)
            .cloned()
            .collect();
        all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        Ok(all)
    }
    fn ended_sessions(
        &self,
        ended_before: Timestamp,
        used_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        Ok(self
            .state()
            .sessions
            .values()
            .filter(|x| {
                x.revoked_at.is_some_and(|t| t < ended_before)
                    || x.expires_at < ended_before
                    || x.last_used_at < used_before
            })
            .take(limit)
            .map(|x| x.id.clone())
            .collect())
    }
}

impl kms_core::store::CapacityStore for Model {
    fn capacity(&self, since: Timestamp) -> Result<kms_core::store::Capacity, StoreError> {
        use kms_core::store::{Capacity, ObjectCounts};
        let s = self.state();
        let recent =
            |times: Vec<Timestamp>| times.into_iter().filter(|t| *t >= since).count() as u64;
        Ok(Capacity {
            stored: ObjectCounts {
                applications: s.apps.len() as u64,
                tokens: s.tokens.len() as u64,
                users: s.users.len() as u64,
                sessions: s.sessions.len() as u64,
                audit_events: s.audit.len() as u64,
            },
            created_since: ObjectCounts {
                applications: recent(s.apps.values().map(|a| a.created_at).collect()),
                tokens: recent(s.tokens.values().map(|t| t.created_at).collect()),
                users: recent(s.users.values().map(|u| u.created_at).collect()),
                sessions: recent(s.sessions.values().map(|x| x.created_at).collect()),
                audit_events: recent(s.audit.values().map(|e| e.at).collect()),
            },
            database_bytes: 0,
        })
    }
}

impl Store for Model {
    fn apply(&self, batch: &[Mutation]) -> Result<(), StoreError> {
        let mut s = self.state();
        let mut next = s.clone();
        for m in batch {
            next.apply(m)?;
        }
        *s = next;
        Ok(())
    }
    fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.state().meta.get(key).cloned())
    }
    fn subscribe(&self, _listener: Weak<dyn ChangeListener>) {}
    fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Comparison
// ---------------------------------------------------------------------------------------

/// An outcome comparable with the model's: the value, or the kind of error.
fn outcome<T: std::fmt::Debug>(r: Result<T, StoreError>) -> Result<String, String> {
    r.map(|v| format!("{v:?}")).map_err(|e| match e {
        StoreError::Conflict(_) => "Conflict".to_owned(),
        other => format!("unexpected: {other}"),
    })
}

/// Everything the read side shows, each read as its own line.
fn observe(store: &dyn Store) -> Vec<String> {
    let mut out = Vec::new();
    let mut line = |what: &str, v: &dyn std::fmt::Debug| out.push(format!("{what}: {v:?}"));
    line("apps", &store.list_apps(None, 100).unwrap());
    // Counts only: the database's size is each store's own.
    let capacity = store.capacity(Timestamp::from_unix(1_800_000_000)).unwrap();
    line("capacity", &(capacity.stored, capacity.created_since));
    line(
        "apps after app_0, 1",
        &store.list_apps(Some("app_0"), 1).unwrap(),
    );
    for id in APPS {
        line(id, &store.get_app(id).unwrap());
        line("tokens of", &store.list_tokens(id, None, 100).unwrap());
        line(
            "2 tokens after tok_0",
            &store.list_tokens(id, Some("tok_0"), 2).unwrap(),
        );
    }
    for id in TOKENS {
        line(id, &store.get_token(id).unwrap());
    }
    for before in [1, 3, 5_000_000_000] {
        let before = Timestamp::from_unix(before);
        line("expired", &store.expired_tokens(before, 2).unwrap());
    }
    for s in SCOPES {
        line(
            s,
            &store.scope_is_granted(&Scope::parse(s).unwrap()).unwrap(),
        );
    }
    for r in ROLES {
        line(
            r,
            &store.role_is_granted(&RoleName::parse(r).unwrap()).unwrap(),
        );
    }
    for k in META_KEYS {
        line(k, &store.get_meta(k).unwrap());
    }
    for id in REFRESH {
        line(id, &store.get_refresh_token(id).unwrap());
    }
    line("policy", &store.load_policy().unwrap());
    line("revocations", &store.list_revocations().unwrap());
    line("signing keys", &store.list_signing_keys().unwrap());
    line("audit after 0", &store.audit_after(0, 100).unwrap());
    line("2 audit after 2", &store.audit_after(2, 2).unwrap());
    line("last audit", &store.last_audit_event().unwrap());
    let queries = [
        AuditQuery {
            limit: 100,
            ..Default::default()
        },
        AuditQuery {
            before_seq: Some(4),
            actor: Some("tok_0".into()),
            limit: 2,
            ..Default::default()
        },
        AuditQuery {
            action: Some("role.put".into()),
            since: Some(Timestamp::from_unix(3)),
            app_id: Some("app_1".into()),
            limit: 100,
            ..Default::default()
        },
    ];
    for q in &queries {
        line("audit query", &store.list_audit(q).unwrap());
    }
    for id in APPS {
        line("users of", &store.list_users(id, None, 100).unwrap());
        line(
            "1 user after usr_0",
            &store.list_users(id, Some("usr_0"), 1).unwrap(),
        );
        line("idps of", &store.list_idps(Some(id)).unwrap());
    }
    line("idps", &store.list_idps(None).unwrap());
    for id in USERS {
        line(id, &store.get_user(id).unwrap());
        for now in [0, 3, 5_000_000_000] {
            let now = Timestamp::from_unix(now);
            line("live sessions", &store.list_sessions(id, now).unwrap());
        }
    }
    for id in IDPS {
        line(id, &store.get_idp(id).unwrap());
        for subject in SUBJECTS {
            let owner = store.user_by_identity(id, subject).unwrap();
            line("owner", &owner.map(|u| u.id));
        }
    }
    for slug in SLUGS {
        line(slug, &store.idp_by_slug(slug).unwrap());
    }
    for r in ROLES {
        let held = store.role_is_held_by_users(&RoleName::parse(r).unwrap());
        line("held", &held.unwrap());
    }
    for id in ATTEMPTS {
        line(id, &store.get_login_attempt(id).unwrap());
    }
    for id in SESSIONS {
        line(id, &store.get_session(id).unwrap());
    }
    out
}

/// The first line where two observations differ, for a readable failure.
fn diff(a: &[String], b: &[String]) -> Option<(String, String)> {
    a.iter()
        .zip(b)
        .find(|(x, y)| x != y)
        .map(|(x, y)| (x.clone(), y.clone()))
        .or_else(|| (a.len() != b.len()).then(|| (a.len().to_string(), b.len().to_string())))
}

/// A PostgreSQL store in a fresh database of the test server; `None`, with a notice, when
/// there is none outside CI.
fn postgres() -> Option<(PostgresStore, ScratchDatabase)> {
    let database = match ScratchDatabase::create() {
        Ok(database) => database,
        Err(NoPostgres::Skip(notice)) => {
            eprintln!("{notice}");
            return None;
        }
        Err(NoPostgres::Fail(message)) => panic!("{message}"),
    };
    Some((open_postgres(&database), database))
}

fn open_postgres(database: &ScratchDatabase) -> PostgresStore {
    let options = PostgresOptions {
        pool_size: 2,
        ..PostgresOptions::default()
    };
    PostgresStore::open(database.url(), options).unwrap()
}

/// `idp_0` (slug `s0`) and `usr_0` (linked to it as `alice`) in `app_0`, and a live
/// session `ses_0` of `usr_0`.
fn starting_people() -> Vec<Mutation> {
    vec![
        Mutation::PutIdp(IdpRecord {
            id: "idp_0".to_owned(),
            app_id: "app_0".to_owned(),
            slug: "s0".to_owned(),
            status: IdpStatus::Active,
            created_at: Timestamp::from_unix(1),
            role_map: [("admins".to_owned(), vec![RoleName::parse("r0").unwrap()])]
                .into_iter()
                .collect(),
            default_roles: Vec::new(),
            email_domains: Vec::new(),
            protocol: IdpProtocol::Saml(SamlSettings {
                idp_metadata_xml: "<EntityDescriptor/>".to_owned(),
                groups_attribute: None,
                allow_idp_initiated: false,
            }),
        }),
        Mutation::PutUser(UserRecord {
            id: "usr_0".to_owned(),
            app_id: "app_0".to_owned(),
            email: None,
            name: None,
            status: UserStatus::Active,
            roles: Vec::new(),
            mapped_roles: Vec::new(),
            grants: Vec::new(),
            identities: vec![Identity {
                idp_id: "idp_0".to_owned(),
                subject: "alice".to_owned(),
            }],
            created_at: Timestamp::from_unix(1),
            last_login_at: None,
        }),
        Mutation::InsertSession(SessionRecord {
            id: "ses_0".to_owned(),
            user_id: "usr_0".to_owned(),
            app_id: "app_0".to_owned(),
            idp_id: "idp_0".to_owned(),
            secret_hash: "ef".repeat(32),
            created_at: Timestamp::from_unix(1),
            expires_at: Timestamp::from_unix(4),
            last_used_at: Timestamp::from_unix(1),
            ip: None,
            user_agent: None,
            revoked_at: None,
            revoke_reason: None,
            sealed_upstream_refresh: None,
            revalidated_at: None,
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn memory_sqlite_file_postgres_and_model_agree(ops in proptest::collection::vec(op(), 1..24)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kms.db");
        let model = Model::default();
        let memory = MemoryStore::new();
        let mut sqlite = SqliteStore::open(&path).unwrap();
        let mut postgres = postgres();
        // Two applications, a provider, a user and a session to start with, so that
        // token and session batches often succeed.
        let mut setup: Vec<Mutation> = ["app_0", "app_1"]
            .iter()
            .map(|id| {
                Mutation::InsertApp(Application {
                    id: (*id).to_owned(),
                    name: format!("{id} name"),
                    token_prefix: TokenPrefix::parse("kms").unwrap(),
                    status: AppStatus::Active,
                    created_at: Timestamp::from_unix(1),
                    usage_price: None,
                    security: AppSecurity::default(),
                })
            })
            .collect();
        setup.extend(starting_people());
        for store in [&model as &dyn Store, &memory, &sqlite] {
            store.apply(&setup).unwrap();
        }
        if let Some((pg, _)) = &postgres {
            pg.apply(&setup).unwrap();
        }
        for op in &ops {
            let pg = postgres.as_ref().map(|(pg, _)| pg as &dyn Store);
            let (want, m, s, p) = match op {
                Op::Apply(batch) => (
                    outcome(model.apply(batch)),
                    outcome(memory.apply(batch)),
                    outcome(sqlite.apply(batch)),
                    pg.map(|pg| outcome(pg.apply(batch))),
                ),
                Op::ConsumeUse(id) => (
                    outcome(model.consume_use(id)),
                    outcome(memory.consume_use(id)),
                    outcome(sqlite.consume_use(id)),
                    pg.map(|pg| outcome(pg.consume_use(id))),
                ),
                Op::Reopen => {
                    drop(sqlite);
                    sqlite = SqliteStore::open(&path).unwrap();
                    if let Some((pg, database)) = &mut postgres {
                        *pg = open_postgres(database);
                    }
                    let none = Ok(String::new());
                    let p = postgres.is_some().then(|| none.clone());
                    (none.clone(), none.clone(), none, p)
                }
            };
            prop_assert_eq!(&m, &want, "memory store, after {:?}", op);
            prop_assert_eq!(&s, &want, "sqlite store, after {:?}", op);
            if let Some(p) = &p {
                prop_assert_eq!(p, &want, "postgres store, after {:?}", op);
            }
            let expected = observe(&model);
            let mem = observe(&memory);
            let sql = observe(&sqlite);
            prop_assert!(diff(&expected, &mem).is_none(), "memory store after {:?}: {:?}", op, diff(&expected, &mem));
            prop_assert!(diff(&expected, &sql).is_none(), "sqlite store after {:?}: {:?}", op, diff(&expected, &sql));
            if let Some((pg, _)) = &postgres {
                let pgs = observe(pg);
                prop_assert!(diff(&expected, &pgs).is_none(), "postgres store after {:?}: {:?}", op, diff(&expected, &pgs));
            }
        }
    }
}
