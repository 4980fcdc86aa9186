//! kms against cedar-policy on random policies with conditions (the subset both express):
//! roles with permissions, inheritance and conditional scopes, tokens with scopes, roles
//! and conditional scope grants, conditions over the context (`==`, `!=`, `in`, `AND`,
//! `OR`, `NOT`), and request contexts that may lack keys. The same cases are translated
//! into cedar policies and entities, and every request must be decided alike.
//!
//! Behind the `peers` feature (it compiles cedar):
//! `cargo test -p kms-benches --features peers --test cedar_differential`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

#[path = "../../kms-core/tests/support/conditions.rs"]
mod conditions;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName, EntityUid,
    PolicySet, Request,
};
use conditions::{case_with, kms_answers, Case, Cond, Target, KEYS, SCOPES, VALUES};
use proptest::prelude::*;

fn uid(kind: &str, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(EntityTypeName::from_str(kind).unwrap(), EntityId::new(id))
}

/// A condition in cedar. kms makes a condition that reads a missing key false as a whole,
/// whatever `OR` or `NOT` surrounds it; cedar's `||` short-circuits, so every key the
/// condition reads is checked with `has` first (cedar then agrees: a missing attribute
/// would otherwise be an error, which also never permits).
fn cedar_cond(c: &Cond) -> String {
    fn expr(c: &Cond) -> String {
        match c {
            Cond::Eq(k, v) => format!("context.{} == \"{}\"", KEYS[*k], VALUES[*v]),
            Cond::Ne(k, v) => format!("context.{} != \"{}\"", KEYS[*k], VALUES[*v]),
            Cond::In(k, vs) => format!(
                "[{}].contains(context.{})",
                vs.iter()
                    .map(|v| format!("\"{}\"", VALUES[*v]))
                    .collect::<Vec<_>>()
                    .join(", "),
                KEYS[*k]
            ),
            Cond::And(a, b) => format!("({}) && ({})", expr(a), expr(b)),
            Cond::Or(a, b) => format!("({}) || ({})", expr(a), expr(b)),
            Cond::Not(a) => format!("!({})", expr(a)),
        }
    }
    let mut keys = BTreeSet::new();
    c.keys(&mut keys);
    let guards: Vec<String> = keys
        .iter()
        .map(|k| format!("context has {}", KEYS[*k]))
        .collect();
    format!("{} && ({})", guards.join(" && "), expr(c))
}

/// The case as cedar policies and entities: the token is `Token::"t"`, in each role it
/// holds; a role is in each role it inherits; scopes are actions.
fn cedar_model(case: &Case) -> (PolicySet, Entities) {
    let mut src = String::new();
    for (i, (scopes, _, grants)) in case.roles.iter().enumerate() {
        for &s in scopes {
            src.push_str(&format!(
                "permit(principal in Role::\"r{i}\", action == Action::\"{}\", resource);\n",
                SCOPES[s]
            ));
        }
        for (s, when) in grants {
            src.push_str(&format!(
                "permit(principal in Role::\"r{i}\", action == Action::\"{}\", resource) when {{ {} }};\n",
                SCOPES[*s],
                cedar_cond(when)
            ));
        }
    }
    for &s in &case.scopes {
        src.push_str(&format!(
            "permit(principal == Token::\"t\", action == Action::\"{}\", resource);\n",
            SCOPES[s]
        ));
    }
    for (target, when) in &case.grants {
        let Target::Scope(s) = target else {
            panic!("conditional role grants are outside the shared subset")
        };
        src.push_str(&format!(
            "permit(principal == Token::\"t\", action == Action::\"{}\", resource) when {{ {} }};\n",
            SCOPES[*s],
            cedar_cond(when)
        ));
    }
    let policies = PolicySet::from_str(&src).unwrap_or_else(|e| panic!("{e}\n{src}"));
    let held: HashSet<EntityUid> = case
        .token_roles
        .iter()
        .map(|r| uid("Role", &format!("r{r}")))
        .collect();
    let mut entities = vec![Entity::new_no_attrs(uid("Token", "t"), held)];
    for (i, (_, inherits, _)) in case.roles.iter().enumerate() {
        let parents: HashSet<EntityUid> = inherits
            .iter()
            .map(|r| uid("Role", &format!("r{r}")))
            .collect();
        entities.push(Entity::new_no_attrs(uid("Role", &format!("r{i}")), parents));
    }
    (policies, Entities::from_entities(entities, None).unwrap())
}

fn cedar_answers(case: &Case) -> Vec<bool> {
    let (policies, entities) = cedar_model(case);
    let authorizer = Authorizer::new();
    case.requests
        .iter()
        .map(|(ctx, scope)| {
            let context: BTreeMap<&str, &str> =
                ctx.iter().map(|(k, v)| (KEYS[*k], VALUES[*v])).collect();
            let context =
                Context::from_json_value(serde_json::to_value(context).unwrap(), None).unwrap();
            let request = Request::new(
                uid("Token", "t"),
                uid("Action", SCOPES[*scope]),
                uid("Resource", "any"),
                context,
                None,
            )
            .unwrap();
            authorizer
                .is_authorized(&request, &policies, &entities)
                .decision()
                == Decision::Allow
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("KMS_MODEL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128)
    ))]

    #[test]
    fn kms_and_cedar_decide_alike(case in case_with(false)) {
        let kms = kms_answers(&case);
        let cedar = cedar_answers(&case);
        prop_assert_eq!(&kms, &cedar, "requests {:?}", case.requests);
    }
}
