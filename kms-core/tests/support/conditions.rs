//! The random conditional-grant cases shared by `conditions_model.rs` (kms against a naive
//! reference) and the cedar differential test in `benches/tests/cedar_differential.rs`
//! (which includes this file by path): flat scopes, roles that inherit earlier roles and
//! carry conditional scopes, tokens with unconditional and conditional grants, conditions
//! over two context keys, and request contexts that may lack keys.

#![allow(dead_code, reason = "each including test uses its own part")]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kms_core::{Kms, NewPermission, NewRole, NewToken, VerifyRequest};
use kms_store::MemoryStore;
use proptest::prelude::*;
use serde_json::json;

pub(crate) const SCOPES: [&str; 4] = ["alpha", "beta", "gamma", "delta"];
pub(crate) const KEYS: [&str; 2] = ["x", "y"];
pub(crate) const VALUES: [&str; 3] = ["a", "b", "c"];

/// A condition as the reference sees it.
#[derive(Debug, Clone)]
pub(crate) enum Cond {
    Eq(usize, usize),
    Ne(usize, usize),
    In(usize, Vec<usize>),
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
}

impl Cond {
    pub(crate) fn text(&self) -> String {
        match self {
            Cond::Eq(k, v) => format!("context.{} == \"{}\"", KEYS[*k], VALUES[*v]),
            Cond::Ne(k, v) => format!("context.{} != \"{}\"", KEYS[*k], VALUES[*v]),
            Cond::In(k, vs) => format!(
                "context.{} in [{}]",
                KEYS[*k],
                vs.iter()
                    .map(|v| format!("\"{}\"", VALUES[*v]))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Cond::And(a, b) => format!("({}) AND ({})", a.text(), b.text()),
            Cond::Or(a, b) => format!("({}) OR ({})", a.text(), b.text()),
            Cond::Not(a) => format!("NOT ({})", a.text()),
        }
    }

    pub(crate) fn keys(&self, out: &mut BTreeSet<usize>) {
        match self {
            Cond::Eq(k, _) | Cond::Ne(k, _) | Cond::In(k, _) => {
                out.insert(*k);
            }
            Cond::And(a, b) | Cond::Or(a, b) => {
                a.keys(out);
                b.keys(out);
            }
            Cond::Not(a) => a.keys(out),
        }
    }

    /// Two-valued truth, given every key it reads is present.
    fn truth(&self, ctx: &BTreeMap<usize, usize>) -> bool {
        match self {
            Cond::Eq(k, v) => ctx[k] == *v,
            Cond::Ne(k, v) => ctx[k] != *v,
            Cond::In(k, vs) => vs.contains(&ctx[k]),
            Cond::And(a, b) => a.truth(ctx) && b.truth(ctx),
            Cond::Or(a, b) => a.truth(ctx) || b.truth(ctx),
            Cond::Not(a) => !a.truth(ctx),
        }
    }

    /// The reference rule: false as a whole when it reads a missing key.
    pub(crate) fn holds(&self, ctx: &BTreeMap<usize, usize>) -> bool {
        let mut keys = BTreeSet::new();
        self.keys(&mut keys);
        keys.iter().all(|k| ctx.contains_key(k)) && self.truth(ctx)
    }
}

pub(crate) fn cond() -> impl Strategy<Value = Cond> {
    let leaf = prop_oneof![
        (0..2usize, 0..3usize).prop_map(|(k, v)| Cond::Eq(k, v)),
        (0..2usize, 0..3usize).prop_map(|(k, v)| Cond::Ne(k, v)),
        (0..2usize, proptest::collection::vec(0..3usize, 1..3)).prop_map(|(k, v)| Cond::In(k, v)),
    ];
    leaf.prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Cond::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Cond::Or(Box::new(a), Box::new(b))),
            inner.prop_map(|a| Cond::Not(Box::new(a))),
        ]
    })
}

#[derive(Debug, Clone)]
pub(crate) enum Target {
    Scope(usize),
    Role(usize),
}

/// A role: its scopes, the earlier roles it inherits, and its conditional scopes.
pub(crate) type RoleDef = (Vec<usize>, Vec<usize>, Vec<(usize, Cond)>);

#[derive(Debug, Clone)]
pub(crate) struct Case {
    pub(crate) roles: Vec<RoleDef>,
    pub(crate) scopes: Vec<usize>,
    pub(crate) token_roles: Vec<usize>,
    pub(crate) grants: Vec<(Target, Cond)>,
    pub(crate) requests: Vec<(BTreeMap<usize, usize>, usize)>,
}

/// Cases with every kind of grant.
pub(crate) fn case() -> impl Strategy<Value = Case> {
    case_with(true)
}

/// Cases whose token grants conditionally only scopes (`conditional_roles` false): the
/// subset cedar expresses directly.
pub(crate) fn case_with(conditional_roles: bool) -> impl Strategy<Value = Case> {
    let roles = proptest::collection::vec(
        (
            proptest::collection::vec(0..4usize, 0..3),
            proptest::collection::vec(0..3usize, 0..2),
            proptest::collection::vec((0..4usize, cond()), 0..2),
        ),
        3,
    );
    let roles_weight = u32::from(conditional_roles);
    let target = prop_oneof![
        1 => (0..4usize).prop_map(Target::Scope),
        roles_weight => (0..3usize).prop_map(Target::Role),
    ];
    let context = proptest::collection::btree_map(0..2usize, 0..3usize, 0..3);
    (
        roles,
        proptest::collection::vec(0..4usize, 0..2),
        proptest::collection::vec(0..3usize, 0..2),
        proptest::collection::vec((target, cond()), 0..4),
        proptest::collection::vec((context, 0..4usize), 1..6),
    )
        .prop_map(|(roles, scopes, token_roles, grants, requests)| Case {
            // A role inherits only earlier roles: no cycles.
            roles: roles
                .into_iter()
                .enumerate()
                .map(|(i, (s, inh, g))| (s, inh.into_iter().filter(|&r| r < i).collect(), g))
                .collect(),
            scopes,
            token_roles,
            grants,
            requests,
        })
}

/// The scopes a role reaches in `ctx`, with inheritance and its conditional scopes.
pub(crate) fn role_scopes(
    case: &Case,
    ctx: &BTreeMap<usize, usize>,
    role: usize,
    out: &mut BTreeSet<usize>,
) {
    let (scopes, inherits, grants) = &case.roles[role];
    out.extend(scopes.iter().copied());
    for (s, when) in grants {
        if when.holds(ctx) {
            out.insert(*s);
        }
    }
    for &r in inherits {
        role_scopes(case, ctx, r, out);
    }
}

pub(crate) fn reference(case: &Case, ctx: &BTreeMap<usize, usize>, scope: usize) -> bool {
    let mut held: BTreeSet<usize> = case.scopes.iter().copied().collect();
    for &r in &case.token_roles {
        role_scopes(case, ctx, r, &mut held);
    }
    for (target, when) in &case.grants {
        if when.holds(ctx) {
            match target {
                Target::Scope(s) => {
                    held.insert(*s);
                }
                Target::Role(r) => role_scopes(case, ctx, *r, &mut held),
            }
        }
    }
    held.contains(&scope)
}

/// What kms answers for each request of `case`: whether the token holds the scope (each
/// asked twice, so the second answer comes from the verified-key cache; both must agree).
pub(crate) fn kms_answers(case: &Case) -> Vec<bool> {
    let kms = Kms::builder(Arc::new(MemoryStore::new()))
        .hash_params(kms_core::dangerous::insecure_hash_params())
        .build()
        .unwrap();
    kms.initialize().unwrap();
    let op = kms.operator();
    for s in SCOPES {
        let p: NewPermission = serde_json::from_value(json!({"scope": s})).unwrap();
        kms.create_permission(&op, p).unwrap();
    }
    for (i, (scopes, inherits, grants)) in case.roles.iter().enumerate() {
        let role: NewRole = serde_json::from_value(json!({
            "name": format!("r{i}"),
            "permissions": scopes.iter().map(|&s| SCOPES[s]).collect::<Vec<_>>(),
            "inherits": inherits.iter().map(|r| format!("r{r}")).collect::<Vec<_>>(),
            "grants": grants.iter().map(|(s, c)| json!({"scope": SCOPES[*s], "when": c.text()})).collect::<Vec<_>>(),
        }))
        .unwrap();
        kms.create_role(&op, role).unwrap();
    }
    let grants: Vec<serde_json::Value> = case
        .grants
        .iter()
        .map(|(t, c)| match t {
            Target::Scope(s) => json!({"scope": SCOPES[*s], "when": c.text()}),
            Target::Role(r) => json!({"role": format!("r{r}"), "when": c.text()}),
        })
        .collect();
    let req: NewToken = serde_json::from_value(json!({
        "name": "t",
        "scopes": case.scopes.iter().map(|&s| SCOPES[s]).collect::<Vec<_>>(),
        "roles": case.token_roles.iter().map(|r| format!("r{r}")).collect::<Vec<_>>(),
        "grants": grants,
    }))
    .unwrap();
    let token = kms
        .create_token(&op, kms_core::SYSTEM_APP_ID, req)
        .unwrap()
        .token;
    let mut answers = Vec::new();
    for (ctx, scope) in &case.requests {
        let context: serde_json::Map<String, serde_json::Value> = ctx
            .iter()
            .map(|(k, v)| (KEYS[*k].to_owned(), json!(VALUES[*v])))
            .collect();
        let req = VerifyRequest {
            token: token.clone(),
            permissions: Some(SCOPES[*scope].to_owned()),
            context: Some(context),
            ..VerifyRequest::default()
        };
        // Twice: the first may fill the cache, the second is answered from it.
        let first = kms.verify(&op, &req).unwrap().is_valid();
        let second = kms.verify(&op, &req).unwrap().is_valid();
        assert_eq!(first, second, "the cached answer differs");
        answers.push(first);
    }
    answers
}

/// kms against the naive reference.
pub(crate) fn kms_decisions(case: &Case) -> Result<(), TestCaseError> {
    let answers = kms_answers(case);
    for ((ctx, scope), got) in case.requests.iter().zip(answers) {
        prop_assert_eq!(
            got,
            reference(case, ctx, *scope),
            "context {:?}, scope {}",
            ctx,
            SCOPES[*scope]
        );
    }
    Ok(())
}
