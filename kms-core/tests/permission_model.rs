//! The compiled snapshot must agree with a naive, obviously-correct reference evaluator on
//! random hierarchies, roles, grants and queries.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::collections::BTreeSet;
use std::sync::Arc;

use kms_core::internal::PermissionSnapshot;
use kms_core::store::Policy;
use kms_core::{Permission, PermissionQuery, Role, RoleName, Scope};
use proptest::prelude::*;

/// Every scope of up to three segments over a small alphabet, so that random picks collide
/// and form hierarchies.
fn universe() -> Vec<String> {
    let segs = ["a", "b", "c"];
    let mut out = vec!["admin".to_owned()];
    for x in segs {
        out.push(x.to_owned());
        for y in segs {
            out.push(format!("{x}.{y}"));
            for z in segs {
                out.push(format!("{x}.{y}.{z}"));
            }
        }
    }
    out
}

#[derive(Debug, Clone)]
struct Case {
    policy: Policy,
    grant_scopes: Vec<Scope>,
    grant_roles: Vec<RoleName>,
    queries: Vec<String>,
}

fn scope(s: &str) -> Scope {
    Scope::parse(s).unwrap()
}

fn case() -> impl Strategy<Value = Case> {
    let u = universe();
    let n = u.len();
    (
        proptest::collection::vec(any::<bool>(), n),
        proptest::collection::vec((0..n, 0..n), 0..12),
        proptest::collection::vec(
            (
                proptest::collection::vec(0..n, 0..4),
                proptest::collection::vec(0..6usize, 0..3),
            ),
            0..6,
        ),
        proptest::collection::vec(0..n, 0..4),
        proptest::collection::vec(0..6usize, 0..3),
        proptest::collection::vec(
            proptest::collection::vec((0..n + 6, any::<bool>()), 1..5),
            1..6,
        ),
    )
        .prop_map(move |(defined, edges, roles, gs, gr, queries)| {
            let u = universe();
            // Keep admin rare so most cases test real structure.
            let defined: Vec<&String> = u
                .iter()
                .zip(defined)
                .filter(|(s, d)| *d && (s.as_str() != "admin" || gs.len() == 3))
                .map(|(s, _)| s)
                .collect();
            let mut policy = Policy::default();
            for s in &defined {
                policy.permissions.insert(
                    scope(s),
                    Permission {
                        scope: scope(s),
                        description: String::new(),
                        implies: vec![],
                    },
                );
            }
            // Implication edges only from lower to higher index among defined: acyclic.
            if defined.len() > 1 {
                for (i, j) in edges {
                    let (i, j) = (i % defined.len(), j % defined.len());
                    if i < j {
                        let target = scope(defined[j]);
                        if let Some(p) = policy.permissions.get_mut(&scope(defined[i])) {
                            if !p.implies.contains(&target) {
                                p.implies.push(target);
                            }
                        }
                    }
                }
            }
            let role_names: Vec<RoleName> = (0..roles.len())
                .map(|i| RoleName::parse(&format!("r{i}")).unwrap())
                .collect();
            for (i, (perms, inherits)) in roles.iter().enumerate() {
                let permissions = if defined.is_empty() {
                    vec![]
                } else {
                    perms
                        .iter()
                        .map(|p| scope(defined[p % defined.len()]))
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect()
                };
                let inherits = inherits
                    .iter()
                    .filter(|&&j| j < i)
                    .map(|&j| role_names[j].clone())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                policy.roles.insert(
                    role_names[i].clone(),
                    Role {
                        grants: Vec::new(),
                        name: role_names[i].clone(),
                        description: String::new(),
                        permissions,
                        inherits,
                    },
                );
            }
            let grant_scopes = if defined.is_empty() {
                vec![]
            } else {
                gs.iter()
                    .map(|g| scope(defined[g % defined.len()]))
                    .collect()
            };
            let grant_roles = gr
                .iter()
                .filter(|&&r| r < role_names.len())
                .map(|&r| role_names[r].clone())
                .collect();
            let deeper = ["a.a.a.x", "b.c.a.y", "c.c.c.z", "d", "d.e", "a.q"];
            let queries = queries
                .into_iter()
                .map(|terms| {
                    let mut q = String::new();
                    for (k, (t, and)) in terms.iter().enumerate() {
                        if k > 0 {
                            q.push_str(if *and { " AND " } else { " OR " });
                        }
                        let name = if *t < u.len() {
                            u[*t].clone()
                        } else {
                            deeper[t - u.len()].to_owned()
                        };
                        q.push_str(&name);
                    }
                    q
                })
                .collect();
            Case {
                policy,
                grant_scopes,
                grant_roles,
                queries,
            }
        })
}

/// The reference: the held set is the fixpoint of grants, role permissions (with
/// inheritance), implication and hierarchy descent over defined scopes; a query scope is
/// held when `admin` is, or when it or one of its ancestors is.
fn reference_holds(c: &Case, q: &str) -> bool {
    let mut held: BTreeSet<String> = c.grant_scopes.iter().map(|s| s.to_string()).collect();
    let mut roles: Vec<RoleName> = c.grant_roles.clone();
    let mut seen_roles = BTreeSet::new();
    while let Some(r) = roles.pop() {
        if seen_roles.insert(r.clone()) {
            if let Some(role) = c.policy.roles.get(&r) {
                held.extend(role.permissions.iter().map(|s| s.to_string()));
                roles.extend(role.inherits.iter().cloned());
            }
        }
    }
    loop {
        let mut next = held.clone();
        for h in &held {
            if let Some(p) = c.policy.permissions.get(&scope(h)) {
                next.extend(p.implies.iter().map(|s| s.to_string()));
            }
            for d in c.policy.permissions.keys() {
                if d.as_str().starts_with(&format!("{h}.")) {
                    next.insert(d.to_string());
                }
            }
        }
        if next == held {
            break;
        }
        held = next;
    }
    held.contains("admin")
        || held
            .iter()
            .any(|h| q == h || q.starts_with(&format!("{h}.")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn compiled_evaluator_agrees_with_reference(c in case()) {
        prop_assert!(c.policy.validate().is_ok());
        let snap = PermissionSnapshot::compile(Arc::new(c.policy.clone()), 7);
        let set = snap.effective(c.grant_scopes.iter(), c.grant_roles.iter());
        for q in &c.queries {
            let query = PermissionQuery::parse(q).unwrap();
            let compiled = snap.evaluate(&set, &query);
            let reference = query.evaluate_with(&mut |s: &str| reference_holds(&c, s));
            prop_assert_eq!(compiled, reference, "query {} on {:?}", q, c);
        }
    }

    #[test]
    fn query_parse_never_panics(s in "[a-zA-Z()&| .]{0,64}") {
        let _ = PermissionQuery::parse(&s);
    }
}

#[test]
fn set_from_another_generation_covers_nothing() {
    let mut policy = Policy::default();
    policy.permissions.insert(
        scope("a"),
        Permission {
            scope: scope("a"),
            description: String::new(),
            implies: vec![],
        },
    );
    let old = PermissionSnapshot::compile(Arc::new(policy.clone()), 1);
    let new = PermissionSnapshot::compile(Arc::new(policy), 2);
    let set = old.effective([&scope("a")], []);
    assert!(old.check(&set, "a"));
    assert!(!new.check(&set, "a"));
}
