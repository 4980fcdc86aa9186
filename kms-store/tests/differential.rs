//! Differential test: random sequences of batches and use-spending, over a small universe
//! of ids so that conflicts, cascades and rollbacks happen often, must leave the memory and
//! SQLite stores with the same results and the same observable state at every step.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use kms_core::store::{
    Identity, IdpProtocol, IdpRecord, IdpStatus, KeyAlgorithm, KeyState, LoginAttempt,
    RefreshRecord, RefreshStatus, Revocation, SamlSettings, SessionRecord, SessionSelector,
    SigningKeyRecord, StoreError, TokenRecord, UserRecord, UserStatus,
};
use kms_core::store::{Mutation, Store};
use kms_core::token_format::TokenPrefix;
use kms_core::{
    AppStatus, Application, AuditEvent, Permission, Role, RoleName, Scope, Timestamp, TokenLimits,
    TokenStatus,
};
use kms_store::{MemoryStore, SqliteStore};
use proptest::prelude::*;

const APPS: &[&str] = &["app_0", "app_1", "app_2"];
const NAMES: &[&str] = &["one", "two", "three"];
const TOKENS: &[&str] = &["tok_0", "tok_1", "tok_2", "tok_3"];
const SCOPES: &[&str] = &["a", "b", "a.x"];
const ROLES: &[&str] = &["r0", "r1"];
const META_KEYS: &[&str] = &["k0", "k1"];
const KEYS: &[&str] = &["kid_0", "kid_1", "kid_2"];
const REFRESH: &[&str] = &["rt_0", "rt_1", "rt_2"];
const FAMILIES: &[&str] = &["fam_0", "fam_1"];
const USERS: &[&str] = &["usr_0", "usr_1"];
const IDPS: &[&str] = &["idp_0", "idp_1"];
const SLUGS: &[&str] = &["s0", "s1"];
const SUBJECTS: &[&str] = &["alice", "bob"];
const SESSIONS: &[&str] = &["ses_0", "ses_1"];

fn pick(pool: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::sample::select(pool).prop_map(str::to_owned)
}

fn app() -> impl Strategy<Value = Application> {
    (pick(APPS), pick(NAMES), any::<bool>()).prop_map(|(id, name, active)| Application {
        id,
        name,
        token_prefix: TokenPrefix::parse("kms").unwrap(),
        status: if active {
            AppStatus::Active
        } else {
            AppStatus::Disabled
        },
        created_at: Timestamp::from_unix(1_800_000_000),
        usage_price: None,
        security: Default::default(),
    })
}

fn token() -> impl Strategy<Value = TokenRecord> {
    (
        pick(TOKENS),
        pick(APPS),
        proptest::sample::subsequence(SCOPES, 0..=2),
        proptest::sample::subsequence(ROLES, 0..=2),
        proptest::option::of(0u64..4),
    )
        .prop_map(|(id, app_id, scopes, roles, uses)| TokenRecord {
            id,
            app_id,
            name: "t".to_owned(),
            secret_hash: "$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA".to_owned(),
            start: "kms_x".to_owned(),
            status: TokenStatus::Active,
            created_at: Timestamp::from_unix(1_800_000_000),
            expires_at: None,
            revoked_at: None,
            scopes: scopes.iter().map(|s| Scope::parse(s).unwrap()).collect(),
            roles: roles.iter().map(|r| RoleName::parse(r).unwrap()).collect(),
            grants: Vec::new(),
            metadata: serde_json::Map::new(),
            limits: TokenLimits {
                uses,
                ..TokenLimits::default()
            },
            rotated_from: None,
            rotated_to: None,
            last_used_at: None,
        })
}

fn refresh() -> impl Strategy<Value = RefreshRecord> {
    (pick(REFRESH), pick(FAMILIES), 0i64..4).prop_map(|(id, family_id, expires)| RefreshRecord {
        id,
        family_id,
        token_id: "tok_0".to_owned(),
        app_id: "app_0".to_owned(),
        secret_hash: "00".repeat(32),
        scope: "a".to_owned(),
        audience: "kms".to_owned(),
        status: RefreshStatus::Active,
        created_at: Timestamp::from_unix(0),
        expires_at: Timestamp::from_unix(expires),
        spent_at: None,
    })
}

fn user() -> impl Strategy<Value = UserRecord> {
    (
        pick(USERS),
        pick(APPS),
        proptest::sample::subsequence(ROLES, 0..=2),
        proptest::collection::vec((pick(IDPS), pick(SUBJECTS)), 0..3),
    )
        .prop_map(|(id, app_id, roles, identities)| UserRecord {
            id,
            app_id,
            email: None,
            name: None,
            status: UserStatus::Active,
            roles: roles.iter().map(|r| RoleName::parse(r).unwrap()).collect(),
            mapped_roles: Vec::new(),
            grants: Vec::new(),
            identities: identities
                .into_iter()
                .map(|(idp_id, subject)| Identity { idp_id, subject })
                .collect(),
            created_at: Timestamp::from_unix(0),
            last_login_at: None,
        })
}

fn idp() -> impl Strategy<Value = IdpRecord> {
    (
        pick(IDPS),
        pick(APPS),
        pick(SLUGS),
        proptest::sample::subsequence(ROLES, 0..=1),
    )
        .prop_map(|(id, app_id, slug, defaults)| IdpRecord {
            id,
            app_id,
            slug,
            status: IdpStatus::Active,
            created_at: Timestamp::from_unix(0),
            role_map: Default::default(),
            default_roles: defaults
                .iter()
                .map(|r| RoleName::parse(r).unwrap())
                .collect(),
            email_domains: Vec::new(),
            protocol: IdpProtocol::Saml(SamlSettings {
                idp_metadata_xml: "<x/>".to_owned(),
                groups_attribute: None,
                allow_idp_initiated: false,
            }),
        })
}

fn session() -> impl Strategy<Value = SessionRecord> {
    (pick(SESSIONS), pick(USERS), pick(APPS), pick(IDPS), 0i64..4).prop_map(
        |(id, user_id, app_id, idp_id, created)| SessionRecord {
            id,
            user_id,
            app_id,
            idp_id,
            secret_hash: "00".repeat(32),
            created_at: Timestamp::from_unix(created),
            expires_at: Timestamp::from_unix(created + 2),
            last_used_at: Timestamp::from_unix(created),
            ip: None,
            user_agent: None,
            revoked_at: None,
            revoke_reason: None,
            sealed_upstream_refresh: None,
            revalidated_at: None,
        },
    )
}

fn people_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        user().prop_map(Mutation::PutUser),
        pick(USERS).prop_map(Mutation::DeleteUser),
        idp().prop_map(Mutation::PutIdp),
        pick(IDPS).prop_map(Mutation::DeleteIdp),
        (pick(&["la_0", "la_1"]), pick(IDPS), 0i64..4).prop_map(|(id, idp_id, at)| {
            Mutation::InsertLoginAttempt(LoginAttempt {
                id,
                idp_id,
                browser_hash: "b".to_owned(),
                nonce: None,
                sealed_pkce_verifier: None,
                saml_request_id: None,
                return_to: None,
                created_at: Timestamp::from_unix(0),
                expires_at: Timestamp::from_unix(at),
            })
        }),
        pick(&["la_0", "la_1"]).prop_map(Mutation::ConsumeLoginAttempt),
        session().prop_map(Mutation::InsertSession),
        session().prop_map(Mutation::UpdateSession),
        (pick(SESSIONS), 0i64..4).prop_map(|(id, at)| Mutation::TouchSession {
            id,
            at: Timestamp::from_unix(at),
        }),
        (
            prop_oneof![
                pick(SESSIONS).prop_map(SessionSelector::Id),
                pick(USERS).prop_map(SessionSelector::User),
                pick(IDPS).prop_map(SessionSelector::Idp),
            ],
            0i64..4
        )
            .prop_map(|(selector, at)| Mutation::RevokeSessions {
                selector,
                at: Timestamp::from_unix(at),
                reason: "revoked".to_owned(),
            }),
        (pick(&["r0", "r1"]), 0i64..4).prop_map(|(id, at)| Mutation::ClaimReplay {
            id,
            expires_at: Timestamp::from_unix(at),
        }),
    ]
}

fn scope() -> impl Strategy<Value = Scope> {
    proptest::sample::select(SCOPES).prop_map(|s| Scope::parse(s).unwrap())
}

fn role_name() -> impl Strategy<Value = RoleName> {
    proptest::sample::select(ROLES).prop_map(|r| RoleName::parse(r).unwrap())
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (pick(META_KEYS), pick(&["v0", "v1"]))
            .prop_map(|(key, value)| Mutation::CreateMeta { key, value }),
        app().prop_map(Mutation::InsertApp),
        app().prop_map(Mutation::UpdateApp),
        pick(APPS).prop_map(Mutation::DeleteApp),
        scope().prop_map(|scope| Mutation::InsertPermission(Permission {
            scope,
            description: String::new(),
            implies: Vec::new(),
        })),
        scope().prop_map(Mutation::DeletePermission),
        (role_name(), proptest::sample::subsequence(SCOPES, 0..=2)).prop_map(|(name, perms)| {
            Mutation::PutRole(Role {
                grants: Vec::new(),
                name,
                description: String::new(),
                permissions: perms.iter().map(|s| Scope::parse(s).unwrap()).collect(),
                inherits: Vec::new(),
            })
        }),
        role_name().prop_map(Mutation::DeleteRole),
        token().prop_map(Mutation::InsertToken),
        token().prop_map(Mutation::UpdateToken),
        pick(TOKENS).prop_map(Mutation::DeleteToken),
        refresh().prop_map(Mutation::InsertRefreshToken),
        (pick(REFRESH), 0i64..4).prop_map(|(id, at)| Mutation::SpendRefreshToken {
            id,
            at: Timestamp::from_unix(at),
        }),
        pick(FAMILIES).prop_map(Mutation::RevokeRefreshFamily),
        (pick(&["jti:a", "jti:b"]), 0i64..4).prop_map(|(id, at)| Mutation::PutRevocation(
            Revocation {
                id,
                expires_at: Timestamp::from_unix(at),
            }
        )),
        (0i64..4).prop_map(|t| Mutation::PurgeExpired {
            before: Timestamp::from_unix(t),
        }),
        (pick(KEYS), 0i64..2, any::<bool>()).prop_map(|(kid, created, active)| {
            Mutation::PutSigningKey(SigningKeyRecord {
                kid,
                algorithm: KeyAlgorithm::EdDSA,
                state: if active {
                    KeyState::Active
                } else {
                    KeyState::Retired
                },
                created_at: Timestamp::from_unix(created),
                verify_until: None,
                retired_at: None,
                public_key: vec![1; 32],
                sealed_private: vec![0, 2, 255],
            })
        }),
        (1u64..4, pick(&["operator", "tok_0"])).prop_map(|(seq, actor)| {
            Mutation::AppendAudit(AuditEvent {
                seq,
                at: Timestamp::from_unix(seq as i64),
                actor,
                action: "x".to_owned(),
                target: "y".to_owned(),
                outcome: "success".to_owned(),
                ip: None,
                request_id: None,
                app_id: None,
                details: serde_json::json!({"seq": seq}),
                prev_hash: String::new(),
                hash: String::new(),
                subject: None,
                sealed_personal: None,
                personal: None,
            })
        }),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Apply(Vec<Mutation>),
    ConsumeUse(String),
}

fn op() -> impl Strategy<Value = Op> {
    let any_mutation = prop_oneof![2 => mutation(), 1 => people_mutation()];
    prop_oneof![
        4 => proptest::collection::vec(any_mutation, 1..5).prop_map(Op::Apply),
        1 => pick(TOKENS).prop_map(Op::ConsumeUse),
    ]
}

/// An outcome comparable across stores: the error's text is part of the contract.
fn outcome<T: std::fmt::Debug>(r: Result<T, StoreError>) -> Result<String, String> {
    r.map(|v| format!("{v:?}")).map_err(|e| e.to_string())
}

/// Everything observable, rendered for comparison.
fn observe(store: &dyn Store) -> String {
    let mut out = String::new();
    out += &format!("{:?}\n", store.list_apps(None, 100).unwrap());
    for app in APPS {
        out += &format!("{:?}\n", store.list_tokens(app, None, 100).unwrap());
    }
    for id in TOKENS {
        out += &format!("{:?}\n", store.get_token(id).unwrap());
    }
    for s in SCOPES {
        out += &format!(
            "{:?}\n",
            store.scope_is_granted(&Scope::parse(s).unwrap()).unwrap()
        );
    }
    for r in ROLES {
        out += &format!(
            "{:?}\n",
            store.role_is_granted(&RoleName::parse(r).unwrap()).unwrap()
        );
    }
    for k in META_KEYS {
        out += &format!("{:?}\n", store.get_meta(k).unwrap());
    }
    for id in REFRESH {
        out += &format!("{:?}\n", store.get_refresh_token(id).unwrap());
    }
    out += &format!("{:?}\n", store.load_policy().unwrap());
    out += &format!("{:?}\n", store.list_revocations().unwrap());
    out += &format!("{:?}\n", store.list_signing_keys().unwrap());
    out += &format!("{:?}\n", store.audit_after(0, 100).unwrap());
    out += &format!("{:?}\n", store.last_audit_event().unwrap());
    for app in APPS {
        out += &format!("{:?}\n", store.list_users(app, None, 100).unwrap());
    }
    out += &format!("{:?}\n", store.list_idps(None).unwrap());
    for slug in SLUGS {
        out += &format!("{:?}\n", store.idp_by_slug(slug).unwrap());
    }
    for idp in IDPS {
        for subject in SUBJECTS {
            let owner = store.user_by_identity(idp, subject).unwrap();
            out += &format!("{:?}\n", owner.map(|u| u.id));
        }
    }
    for user in USERS {
        let live = store.list_sessions(user, Timestamp::from_unix(2)).unwrap();
        out += &format!("{live:?}\n");
    }
    for id in SESSIONS {
        out += &format!("{:?}\n", store.get_session(id).unwrap());
    }
    for id in ["la_0", "la_1"] {
        out += &format!("{:?}\n", store.get_login_attempt(id).unwrap());
    }
    for r in ROLES {
        let held = store.role_is_held_by_users(&RoleName::parse(r).unwrap());
        out += &format!("{:?}\n", held.unwrap());
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn memory_and_sqlite_stores_agree(ops in proptest::collection::vec(op(), 1..16)) {
        let (memory, sqlite) = (MemoryStore::new(), SqliteStore::open_in_memory().unwrap());
        let (memory, sqlite): (&dyn Store, &dyn Store) = (&memory, &sqlite);
        for op in &ops {
            let (m, s) = match op {
                Op::Apply(batch) => (outcome(memory.apply(batch)), outcome(sqlite.apply(batch))),
                Op::ConsumeUse(id) => (outcome(memory.consume_use(id)), outcome(sqlite.consume_use(id))),
            };
            prop_assert_eq!(&m, &s, "after {:?}", op);
            prop_assert_eq!(observe(memory), observe(sqlite), "after {:?}", op);
        }
    }
}
