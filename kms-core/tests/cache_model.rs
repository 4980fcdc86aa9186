//! The verified-key cache is a second copy of the truth, so it is checked against no cache
//! at all: random sequences of verifications and management operations run against a `Kms`
//! with the cache and against one without it (each over its own store, memory and SQLite);
//! after every step, every token ever issued must verify identically on both, through each
//! entry point (full verification, the async server's cached fast path that the guard layer
//! uses, and bearer authentication with its cached fast path).
//!
//! `KMS_MODEL_CASES=2000 cargo test -p kms-core --test cache_model` for a long run.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use kms_core::store::Store;
use kms_core::{
    Kms, LockoutPolicy, ManualClock, PermissionQuery, Timestamp, TokenUpdate, Verification,
    VerifyCode,
};
use kms_store::{MemoryStore, SqliteStore};
use proptest::prelude::*;

const NOW: i64 = 1_800_000_000;
const APPS: usize = 2;
/// Scopes tokens and roles are granted and queried for; the `extra.*` ones come and go.
const SCOPES: [&str; 5] = [
    "billing",
    "billing.read",
    "reports.read",
    "extra.a",
    "extra.b",
];
const EXTRA: [&str; 2] = ["extra.a", "extra.b"];
const ROLES: [&str; 2] = ["auditor", "clerk"];
const IPS: [&str; 2] = ["10.0.0.1", "192.168.1.1"];

#[derive(Debug, Clone)]
enum Op {
    CreateToken {
        app: usize,
        scopes: Vec<usize>,
        roles: Vec<usize>,
        uses: Option<u8>,
        ratelimit: bool,
        ip_allow: Option<usize>,
        expires: bool,
    },
    /// Verify token `token` (an index into every token issued so far, modulo their number).
    Verify {
        token: usize,
        query: Option<usize>,
        ip: Option<usize>,
        fast_path_first: bool,
    },
    Authenticate {
        token: usize,
        ip: Option<usize>,
        fast_path_first: bool,
    },
    Revoke(usize),
    Delete(usize),
    Rotate(usize),
    UpdateLimits {
        token: usize,
        uses: Option<Option<u8>>,
        ratelimit: Option<bool>,
        ip_allow: Option<Option<usize>>,
    },
    SetAppStatus {
        app: usize,
        disabled: bool,
    },
    /// Renames an application (any change to one application).
    RenameApp(usize, u8),
    CreatePermission(usize),
    DeletePermission(usize),
    CreateRole {
        role: usize,
        scopes: Vec<usize>,
    },
    ChangeRole {
        role: usize,
        scopes: Vec<usize>,
    },
    DeleteRole(usize),
    AdvanceClock(u16),
}

fn op() -> impl Strategy<Value = Op> {
    let idx = || 0usize..64;
    let subset = |n: usize| proptest::collection::vec(0..n, 0..3);
    prop_oneof![
        3 => (0..APPS, subset(SCOPES.len()), subset(ROLES.len()), proptest::option::weighted(0.3, 0u8..3),
              proptest::bool::weighted(0.2), proptest::option::weighted(0.2, 0..IPS.len()), proptest::bool::weighted(0.2))
            .prop_map(|(app, scopes, roles, uses, ratelimit, ip_allow, expires)| Op::CreateToken {
                app, scopes, roles, uses, ratelimit, ip_allow, expires
            }),
        8 => (idx(), proptest::option::of(0..SCOPES.len()), proptest::option::of(0..IPS.len()), any::<bool>())
            .prop_map(|(token, query, ip, fast_path_first)| Op::Verify { token, query, ip, fast_path_first }),
        3 => (idx(), proptest::option::of(0..IPS.len()), any::<bool>())
            .prop_map(|(token, ip, fast_path_first)| Op::Authenticate { token, ip, fast_path_first }),
        1 => idx().prop_map(Op::Revoke),
        1 => idx().prop_map(Op::Delete),
        1 => idx().prop_map(Op::Rotate),
        1 => (idx(), proptest::option::of(proptest::option::of(0u8..3)), proptest::option::of(any::<bool>()),
              proptest::option::of(proptest::option::of(0..IPS.len())))
            .prop_map(|(token, uses, ratelimit, ip_allow)| Op::UpdateLimits { token, uses, ratelimit, ip_allow }),
        1 => (0..APPS, any::<bool>()).prop_map(|(app, disabled)| Op::SetAppStatus { app, disabled }),
        1 => (0..APPS, 0u8..3).prop_map(|(app, n)| Op::RenameApp(app, n)),
        1 => (0..EXTRA.len()).prop_map(Op::CreatePermission),
        1 => (0..EXTRA.len()).prop_map(Op::DeletePermission),
        1 => (0..ROLES.len(), subset(SCOPES.len())).prop_map(|(role, scopes)| Op::CreateRole { role, scopes }),
        1 => (0..ROLES.len(), subset(SCOPES.len())).prop_map(|(role, scopes)| Op::ChangeRole { role, scopes }),
        1 => (0..ROLES.len()).prop_map(Op::DeleteRole),
        1 => (1u16..120).prop_map(Op::AdvanceClock),
    ]
}

/// One side: a `Kms`, its clock, and what it issued (in issue order, so both sides' lists
/// line up even though ids and secrets differ).
struct Side {
    kms: Kms,
    clock: Arc<ManualClock>,
    apps: Vec<String>,
    /// (id, plaintext) of every token issued.
    tokens: Vec<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

fn json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap()
}

impl Side {
    fn new(sqlite: bool, cached: bool) -> Side {
        let (store, dir): (Arc<dyn Store>, _) = if sqlite {
            let dir = tempfile::tempdir().unwrap();
            let store = SqliteStore::open(dir.path().join("kms.db")).unwrap();
            (Arc::new(store), Some(dir))
        } else {
            (Arc::new(MemoryStore::new()), None)
        };
        let clock = Arc::new(ManualClock::new(Timestamp::from_unix(NOW)));
        let kms = Kms::builder(store)
            .clock(clock.clone())
            .hash_params(kms_core::dangerous::insecure_hash_params())
            .cache_capacity(if cached { 10_000 } else { 0 })
            .cache_ttl(Duration::from_secs(3600))
            // Lockouts are a property of their own: a cached correct secret passes while its
            // source is locked out, an uncached one cannot be told from a guess.
            .lockout_policy(LockoutPolicy {
                threshold: 0,
                ..LockoutPolicy::default()
            })
            .build()
            .unwrap();
        kms.initialize().unwrap();
        let op = kms.operator();
        for scope in ["billing", "billing.read", "reports.read"] {
            kms.create_permission(&op, json(serde_json::json!({ "scope": scope })))
                .unwrap();
        }
        let apps = (0..APPS)
            .map(|i| {
                kms.create_app(&op, json(serde_json::json!({ "name": format!("app{i}") })))
                    .unwrap()
                    .id
            })
            .collect();
        Side {
            kms,
            clock,
            apps,
            tokens: Vec::new(),
            _dir: dir,
        }
    }

    fn token(&self, i: usize) -> Option<&(String, String)> {
        (!self.tokens.is_empty()).then(|| &self.tokens[i % self.tokens.len()])
    }

    /// Applies a management operation; the outcome as a comparable string.
    fn manage(&mut self, op: &Op) -> String {
        let caller = self.kms.operator();
        let k = &self.kms;
        let outcome: kms_core::Result<String> = match op {
            Op::CreateToken {
                app,
                scopes,
                roles,
                uses,
                ratelimit,
                ip_allow,
                expires,
            } => {
                let mut body = serde_json::json!({
                    "name": "t",
                    "scopes": scopes.iter().map(|i| SCOPES[*i]).collect::<Vec<_>>(),
                    "roles": roles.iter().map(|i| ROLES[*i]).collect::<Vec<_>>(),
                });
                if let Some(u) = uses {
                    body["uses"] = (*u).into();
                }
                if *ratelimit {
                    body["ratelimit"] = serde_json::json!({"limit": 2, "per_seconds": 86400});
                }
                if let Some(ip) = ip_allow {
                    body["ip_allow"] = serde_json::json!([format!("{}/32", IPS[*ip])]);
                }
                if *expires {
                    body["expires_in"] = 60.into();
                }
                k.create_token(&caller, &self.apps[*app], json(body))
                    .map(|c| {
                        self.tokens.push((c.info.id.clone(), c.token));
                        "created".to_owned()
                    })
            }
            Op::Revoke(t) => match self.token(*t) {
                Some((id, _)) => k.revoke_token(&caller, id).map(|_| "revoked".into()),
                None => Ok("no token".into()),
            },
            Op::Delete(t) => match self.token(*t) {
                Some((id, _)) => k.delete_token(&caller, id).map(|_| "deleted".into()),
                None => Ok("no token".into()),
            },
            Op::Rotate(t) => match self.token(*t).cloned() {
                Some((id, _)) => k
                    .rotate_token(&caller, &id, json(serde_json::json!({"grace_seconds": 0})))
                    .map(|c| {
                        self.tokens.push((c.info.id.clone(), c.token));
                        "rotated".to_owned()
                    }),
                None => Ok("no token".into()),
            },
            Op::UpdateLimits {
                token,
                uses,
                ratelimit,
                ip_allow,
            } => match self.token(*token) {
                Some((id, _)) => {
                    let update = TokenUpdate {
                        uses: uses.map(|u| u.map(i64::from)),
                        ratelimit: ratelimit.map(|on| {
                            on.then(|| json(serde_json::json!({"limit": 1, "per_seconds": 86400})))
                        }),
                        ip_allow: ip_allow.map(|ip| ip.map(|i| vec![format!("{}/32", IPS[i])])),
                        ..TokenUpdate::default()
                    };
                    k.update_token(&caller, id, update)
                        .map(|_| "updated".into())
                }
                None => Ok("no token".into()),
            },
            Op::SetAppStatus { app, disabled } => {
                let status = if *disabled { "disabled" } else { "active" };
                k.update_app(
                    &caller,
                    &self.apps[*app],
                    json(serde_json::json!({ "status": status })),
                )
                .map(|a| format!("{:?}", a.status))
            }
            Op::RenameApp(app, n) => k
                .update_app(
                    &caller,
                    &self.apps[*app],
                    json(serde_json::json!({ "name": format!("app{app}-{n}") })),
                )
                .map(|_| "renamed".into()),
            Op::CreatePermission(i) => k
                .create_permission(&caller, json(serde_json::json!({ "scope": EXTRA[*i] })))
                .map(|_| "created".into()),
            Op::DeletePermission(i) => k
                .delete_permission(&caller, EXTRA[*i])
                .map(|_| "deleted".into()),
            Op::CreateRole { role, scopes } => k
                .create_role(
                    &caller,
                    json(serde_json::json!({
                        "name": ROLES[*role],
                        "permissions": scopes.iter().map(|i| SCOPES[*i]).collect::<Vec<_>>(),
                    })),
                )
                .map(|_| "created".into()),
            Op::ChangeRole { role, scopes } => k
                .update_role(
                    &caller,
                    ROLES[*role],
                    json(serde_json::json!({
                        "permissions": scopes.iter().map(|i| SCOPES[*i]).collect::<Vec<_>>(),
                    })),
                )
                .map(|_| "changed".into()),
            Op::DeleteRole(role) => k
                .delete_role(&caller, ROLES[*role])
                .map(|_| "deleted".into()),
            Op::AdvanceClock(secs) => {
                self.clock.advance(i64::from(*secs));
                Ok("advanced".into())
            }
            Op::Verify { .. } | Op::Authenticate { .. } => Ok(String::new()),
        };
        match outcome {
            Ok(s) => s,
            Err(e) => format!("error {:?}", e.code()),
        }
    }
}

/// What a verification says, without the side's own ids.
#[derive(Debug, PartialEq)]
struct Verdict {
    code: VerifyCode,
    remaining: Option<u64>,
    scopes: Vec<String>,
    found: bool,
}

fn verdict(v: &Verification) -> Verdict {
    let scopes = match v.to_response() {
        kms_core::VerifyResponse::Valid { scopes, .. } => {
            scopes.iter().map(|s| s.as_str().to_owned()).collect()
        }
        _ => Vec::new(),
    };
    Verdict {
        code: v.code(),
        remaining: v.remaining(),
        scopes,
        found: v.token_id().is_some(),
    }
}

fn ip(i: Option<usize>) -> Option<IpAddr> {
    i.map(|i| IPS[i].parse().unwrap())
}

/// Verifies the way the side is told to: the fast path first (answered inline when it
/// can), then the full pipeline.
fn verify(
    side: &Side,
    token: &str,
    query: Option<usize>,
    ip_: Option<usize>,
    fast: bool,
) -> Verdict {
    let query = query.map(|q| PermissionQuery::parse(SCOPES[q]).unwrap());
    if fast {
        if let Some(r) = side
            .kms
            .try_verify_token_cached(token, query.as_ref(), ip(ip_))
        {
            return verdict(&r.unwrap());
        }
    }
    verdict(
        &side
            .kms
            .verify_token(token, query.as_ref(), ip(ip_))
            .unwrap(),
    )
}

fn authenticate(side: &Side, token: &str, ip_: Option<usize>, fast: bool) -> String {
    let outcome = if fast {
        side.kms.try_authenticate_cached(token, ip(ip_))
    } else {
        None
    }
    .unwrap_or_else(|| side.kms.authenticate(token, ip(ip_)));
    match outcome {
        Ok(c) => format!(
            "caller of {}",
            if c.is_system() { "system" } else { "tenant" }
        ),
        Err(e) => format!("{e}"),
    }
}

fn run(ops: &[Op], sqlite: bool) -> Result<(), TestCaseError> {
    let mut cached = Side::new(sqlite, true);
    let mut plain = Side::new(sqlite, false);
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Verify {
                token,
                query,
                ip,
                fast_path_first,
            } => {
                if let (Some((_, a)), Some((_, b))) = (cached.token(*token), plain.token(*token)) {
                    let got = verify(&cached, a, *query, *ip, *fast_path_first);
                    let want = verify(&plain, b, *query, *ip, false);
                    prop_assert_eq!(got, want, "step {}: {:?}", step, op);
                }
            }
            Op::Authenticate {
                token,
                ip,
                fast_path_first,
            } => {
                if let (Some((_, a)), Some((_, b))) = (cached.token(*token), plain.token(*token)) {
                    let got = authenticate(&cached, a, *ip, *fast_path_first);
                    let want = authenticate(&plain, b, *ip, false);
                    prop_assert_eq!(got, want, "step {}: {:?}", step, op);
                }
            }
            _ => {
                let got = cached.manage(op);
                let want = plain.manage(op);
                prop_assert_eq!(got, want, "step {}: {:?}", step, op);
            }
        }
        // After every step, every token issued verifies alike. The cached side is asked on
        // its fast path, which answers from the cache whenever it can (and never for a key
        // with a use limit, before spending anything); where it cannot, both sides are asked
        // through bearer authentication, which spends no use either.
        for i in 0..cached.tokens.len() {
            let (a, b) = (&cached.tokens[i].1, &plain.tokens[i].1);
            match cached.kms.try_verify_token_cached(a, None, ip(Some(0))) {
                Some(got) => {
                    let got = verdict(&got.unwrap());
                    let want = verify(&plain, b, None, Some(0), false);
                    prop_assert_eq!(got, want, "token {} after step {}: {:?}", i, step, op);
                }
                None => {
                    let got = authenticate(&cached, a, Some(0), false);
                    let want = authenticate(&plain, b, Some(0), false);
                    prop_assert_eq!(got, want, "token {} after step {}: {:?}", i, step, op);
                }
            }
        }
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("KMS_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn cached_and_uncached_verification_agree_on_the_memory_store(ops in proptest::collection::vec(op(), 1..40)) {
        run(&ops, false)?;
    }

    #[test]
    fn cached_and_uncached_verification_agree_on_sqlite(ops in proptest::collection::vec(op(), 1..40)) {
        run(&ops, true)?;
    }
}

/// The sequence of the report that opened this work, as a fixed case: a policy change
/// re-caches a key under the same digest, and a revocation must still reach it.
#[test]
fn a_revocation_after_a_policy_change_is_immediate() {
    let ops = [
        Op::CreateToken {
            app: 0,
            scopes: vec![1],
            roles: vec![],
            uses: None,
            ratelimit: false,
            ip_allow: None,
            expires: false,
        },
        Op::Verify {
            token: 0,
            query: None,
            ip: None,
            fast_path_first: true,
        },
        Op::CreatePermission(0),
        Op::Verify {
            token: 0,
            query: None,
            ip: None,
            fast_path_first: true,
        },
        Op::Revoke(0),
    ];
    run(&ops, false).unwrap();
}
