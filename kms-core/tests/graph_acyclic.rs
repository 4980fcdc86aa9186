//! Property test: random sequences of policy operations through the public `Kms` facade,
//! over a small universe of names so that cycles, duplicates, dangling references and
//! in-use deletions are attempted often.
//!
//! After every operation:
//! - the outcome is the one a trivial model (maps written here) predicts: accepted, or
//!   refused with the documented error code (`Conflict`, `NotFound`, `InvalidRequest`, the
//!   latter naming the cycle when one was attempted);
//! - the permission-implication and role-inheritance graphs read back through the public
//!   API (and straight from the store) are acyclic, by a DFS written here;
//! - a refused operation changed nothing (full listings before and after are equal), and an
//!   accepted one is reflected (the listings equal the model, effective scopes included).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kms_core::store::PolicyStore;
use kms_core::{
    Caller, ErrorCode, Kms, ManualClock, NewApp, NewPermission, NewRole, NewToken, PageRequest,
    RoleUpdate, Timestamp,
};
use kms_store::MemoryStore;
use proptest::prelude::*;

const PERMS: [&str; 5] = ["p0", "p1", "p2", "p3", "p4"];
const ROLES: [&str; 3] = ["r0", "r1", "r2"];

#[derive(Debug, Clone)]
enum Op {
    /// `create_permission`.
    CreatePermission(usize, Vec<usize>),
    /// `create_permissions` (bulk: all or nothing).
    CreatePermissions(Vec<(usize, Vec<usize>)>),
    DeletePermission(usize),
    CreateRole {
        name: usize,
        perms: Vec<usize>,
        inherits: Vec<usize>,
    },
    UpdateRole {
        name: usize,
        perms: Option<Vec<usize>>,
        inherits: Option<Vec<usize>>,
    },
    DeleteRole(usize),
    /// Grants make deletions conflict.
    CreateToken {
        perms: Vec<usize>,
        roles: Vec<usize>,
    },
    /// Deletes the n-th live token (modulo their number), if any.
    DeleteToken(usize),
}

fn refs(n: usize) -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(0..n, 0..3)
}

fn op() -> impl Strategy<Value = Op> {
    let p = PERMS.len();
    let r = ROLES.len();
    prop_oneof![
        3 => (0..p, refs(p)).prop_map(|(s, i)| Op::CreatePermission(s, i)),
        3 => proptest::collection::vec((0..p, refs(p)), 1..4).prop_map(Op::CreatePermissions),
        2 => (0..p).prop_map(Op::DeletePermission),
        3 => (0..r, refs(p), refs(r))
            .prop_map(|(name, perms, inherits)| Op::CreateRole { name, perms, inherits }),
        4 => (0..r, proptest::option::of(refs(p)), proptest::option::of(refs(r)))
            .prop_map(|(name, perms, inherits)| Op::UpdateRole { name, perms, inherits }),
        2 => (0..r).prop_map(Op::DeleteRole),
        1 => (refs(p), refs(r)).prop_map(|(perms, roles)| Op::CreateToken { perms, roles }),
        1 => any::<usize>().prop_map(Op::DeleteToken),
    ]
}

/// What the test believes the definitions are: the permissions and roles of the universe
/// (the 14 defaults are left alone) and the live tokens' grants.
#[derive(Debug, Clone, Default, PartialEq)]
struct Model {
    /// scope -> implies
    perms: BTreeMap<String, Vec<String>>,
    /// name -> (permissions, inherits)
    roles: BTreeMap<String, (Vec<String>, Vec<String>)>,
    /// (id, scopes, roles)
    tokens: Vec<(String, Vec<String>, Vec<String>)>,
}

/// The predicted outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Ok,
    Err(ErrorCode),
    /// `InvalidRequest` naming a cycle.
    Cycle,
}

/// Names of `idx` in `pool`, without repeats, in first-seen order (as the API dedups).
fn names(pool: &[&str], idx: &[usize]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for &i in idx {
        let n = pool[i].to_owned();
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

fn raw(pool: &[&str], idx: &[usize]) -> Vec<String> {
    idx.iter().map(|&i| pool[i].to_owned()).collect()
}

/// A cycle in `graph`, by plain recursive DFS (white/grey/black).
fn has_cycle(graph: &BTreeMap<String, Vec<String>>) -> bool {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, Vec<String>>,
        grey: &mut BTreeSet<String>,
        black: &mut BTreeSet<String>,
    ) -> bool {
        if black.contains(n) {
            return false;
        }
        if !grey.insert(n.to_owned()) {
            return true;
        }
        for m in graph.get(n).into_iter().flatten() {
            if visit(m, graph, grey, black) {
                return true;
            }
        }
        grey.remove(n);
        black.insert(n.to_owned());
        false
    }
    let (mut grey, mut black) = (BTreeSet::new(), BTreeSet::new());
    graph.keys().any(|n| visit(n, graph, &mut grey, &mut black))
}

impl Model {
    fn implies_graph(&self) -> BTreeMap<String, Vec<String>> {
        self.perms.clone()
    }

    fn inherits_graph(&self) -> BTreeMap<String, Vec<String>> {
        self.roles
            .iter()
            .map(|(n, (_, i))| (n.clone(), i.clone()))
            .collect()
    }

    /// The validation the policy promises: every reference resolves, no cycle.
    fn check(&self) -> Want {
        let dangling_implies = self
            .perms
            .values()
            .flatten()
            .any(|s| !self.perms.contains_key(s));
        let dangling_role = self.roles.values().any(|(p, i)| {
            p.iter().any(|s| !self.perms.contains_key(s))
                || i.iter().any(|r| !self.roles.contains_key(r))
        });
        if dangling_implies || dangling_role {
            return Want::Err(ErrorCode::InvalidRequest);
        }
        if has_cycle(&self.implies_graph()) || has_cycle(&self.inherits_graph()) {
            return Want::Cycle;
        }
        Want::Ok
    }

    /// Every scope a role grants: inherited roles' permissions, closed under implication
    /// (the universe is flat, so the hierarchy adds nothing).
    fn effective(&self, role: &str) -> Vec<String> {
        let mut roles = vec![role.to_owned()];
        let mut seen_roles = BTreeSet::new();
        let mut scopes: Vec<String> = Vec::new();
        while let Some(r) = roles.pop() {
            if !seen_roles.insert(r.clone()) {
                continue;
            }
            let (p, i) = &self.roles[&r];
            scopes.extend(p.iter().cloned());
            roles.extend(i.iter().cloned());
        }
        let mut held = BTreeSet::new();
        while let Some(s) = scopes.pop() {
            if held.insert(s.clone()) {
                scopes.extend(self.perms[&s].iter().cloned());
            }
        }
        held.into_iter().collect()
    }
}

/// A role as listed: (permissions, inherits, effective).
type RoleRow = (Vec<String>, Vec<String>, Vec<String>);

/// Everything observable about the definitions and grants, read through the public API.
#[derive(Debug, Clone, PartialEq)]
struct Listing {
    /// Every permission: scope -> (description, implies).
    perms: BTreeMap<String, (String, Vec<String>)>,
    /// Every role: name -> (permissions, inherits, effective).
    roles: BTreeMap<String, RoleRow>,
    /// Every token of the test application: id -> (scopes, roles).
    tokens: BTreeMap<String, (Vec<String>, Vec<String>)>,
}

struct Env {
    kms: Kms,
    store: Arc<MemoryStore>,
    op: Caller,
    app: String,
    model: Model,
    defaults: BTreeMap<String, (String, Vec<String>)>,
}

fn strings<T: ToString>(v: &[T]) -> Vec<String> {
    v.iter().map(ToString::to_string).collect()
}

impl Env {
    fn new() -> Env {
        let store = Arc::new(MemoryStore::new());
        let kms = Kms::builder(store.clone())
            .clock(Arc::new(ManualClock::new(Timestamp::from_unix(
                1_800_000_000,
            ))))
            .hash_params(kms_core::dangerous::insecure_hash_params())
            .build()
            .unwrap();
        kms.initialize().unwrap();
        let op = kms.operator();
        let app = kms
            .create_app(
                &op,
                NewApp {
                    name: "graphs".into(),
                    ..Default::default()
                },
            )
            .unwrap()
            .id;
        let mut env = Env {
            kms,
            store,
            op,
            app,
            model: Model::default(),
            defaults: BTreeMap::new(),
        };
        env.defaults = env.listing().perms;
        assert_eq!(env.defaults.len(), 20);
        // A start with something to refer to, so that fewer operations fail on a dangling
        // name and more reach the cycle and in-use checks: p1 -> p0, p2; r1 -> r0.
        let prelude = [
            Op::CreatePermissions(vec![(0, vec![]), (1, vec![0]), (2, vec![])]),
            Op::CreateRole {
                name: 0,
                perms: vec![0],
                inherits: vec![],
            },
            Op::CreateRole {
                name: 1,
                perms: vec![1],
                inherits: vec![0],
            },
        ];
        for op in &prelude {
            let (result, want, next) = env.run(op);
            result.unwrap();
            assert_eq!(want, Want::Ok);
            env.model = next;
        }
        env
    }

    fn listing(&self) -> Listing {
        let perms: BTreeMap<_, _> = self
            .kms
            .list_permissions(&self.op)
            .unwrap()
            .into_iter()
            .map(|p| {
                (
                    p.scope.to_string(),
                    (p.description.clone(), strings(&p.implies)),
                )
            })
            .collect();
        let roles = self
            .kms
            .list_roles(&self.op)
            .unwrap()
            .into_iter()
            .map(|r| {
                (
                    r.name.to_string(),
                    (
                        strings(&r.permissions),
                        strings(&r.inherits),
                        strings(&r.effective),
                    ),
                )
            })
            .collect();
        let page = PageRequest {
            limit: Some(1000),
            cursor: None,
        };
        let tokens = self
            .kms
            .list_tokens(&self.op, &self.app, page)
            .unwrap()
            .items
            .into_iter()
            .map(|t| (t.id.clone(), (strings(&t.scopes), strings(&t.roles))))
            .collect();
        // The compiled snapshot serves exactly what the store holds.
        let stored = self.store.load_policy().unwrap();
        assert_eq!(
            &stored,
            &**kms_core::internal::snapshot(&self.kms).unwrap().policy()
        );
        Listing {
            perms,
            roles,
            tokens,
        }
    }

    /// Runs `op` and returns its outcome and the model it should leave (the current one
    /// when it should be refused).
    fn run(&mut self, op: &Op) -> (Result<(), kms_core::Error>, Want, Model) {
        let m = &self.model;
        let mut next = m.clone();
        let (result, want) = match op {
            Op::CreatePermission(s, implies) => {
                let scope = PERMS[*s].to_owned();
                let want = if m.perms.contains_key(&scope) {
                    Want::Err(ErrorCode::Conflict)
                } else {
                    next.perms.insert(scope.clone(), names(&PERMS, implies));
                    next.check()
                };
                let req = NewPermission {
                    scope,
                    description: None,
                    implies: raw(&PERMS, implies),
                };
                (self.kms.create_permission(&self.op, req).map(drop), want)
            }
            Op::CreatePermissions(items) => {
                let mut seen = BTreeSet::new();
                let mut dup = false;
                let mut conflict = false;
                for (s, implies) in items {
                    let scope = PERMS[*s].to_owned();
                    conflict |= m.perms.contains_key(&scope);
                    dup |= !seen.insert(scope.clone());
                    next.perms.insert(scope, names(&PERMS, implies));
                }
                let want = if conflict {
                    Want::Err(ErrorCode::Conflict)
                } else if dup {
                    Want::Err(ErrorCode::InvalidRequest)
                } else {
                    next.check()
                };
                let reqs = items
                    .iter()
                    .map(|(s, implies)| NewPermission {
                        scope: PERMS[*s].to_owned(),
                        description: Some(format!("bulk {s}")),
                        implies: raw(&PERMS, implies),
                    })
                    .collect();
                (self.kms.create_permissions(&self.op, reqs).map(drop), want)
            }
            Op::DeletePermission(s) => {
                let scope = PERMS[*s];
                let want = if !m.perms.contains_key(scope) {
                    Want::Err(ErrorCode::NotFound)
                } else if m.roles.values().any(|(p, _)| p.iter().any(|x| x == scope))
                    || m.perms.values().any(|i| i.iter().any(|x| x == scope))
                    || m.tokens
                        .iter()
                        .any(|(_, p, _)| p.iter().any(|x| x == scope))
                {
                    Want::Err(ErrorCode::Conflict)
                } else {
                    next.perms.remove(scope);
                    Want::Ok
                };
                (self.kms.delete_permission(&self.op, scope), want)
            }
            Op::CreateRole {
                name,
                perms,
                inherits,
            } => {
                let role = ROLES[*name].to_owned();
                let want = if m.roles.contains_key(&role) {
                    Want::Err(ErrorCode::Conflict)
                } else {
                    next.roles.insert(
                        role.clone(),
                        (names(&PERMS, perms), names(&ROLES, inherits)),
                    );
                    next.check()
                };
                let req = NewRole {
                    name: role,
                    description: None,
                    permissions: raw(&PERMS, perms),
                    inherits: raw(&ROLES, inherits),
                    grants: Vec::new(),
                };
                (self.kms.create_role(&self.op, req).map(drop), want)
            }
            Op::UpdateRole {
                name,
                perms,
                inherits,
            } => {
                let role = ROLES[*name];
                let want = match next.roles.get_mut(role) {
                    None => Want::Err(ErrorCode::NotFound),
                    Some((p, i)) => {
                        if let Some(perms) = perms {
                            *p = names(&PERMS, perms);
                        }
                        if let Some(inherits) = inherits {
                            *i = names(&ROLES, inherits);
                        }
                        next.check()
                    }
                };
                let req = RoleUpdate {
                    description: None,
                    permissions: perms.as_deref().map(|p| raw(&PERMS, p)),
                    inherits: inherits.as_deref().map(|i| raw(&ROLES, i)),
                    grants: None,
                };
                (self.kms.update_role(&self.op, role, req).map(drop), want)
            }
            Op::DeleteRole(r) => {
                let role = ROLES[*r];
                let want = if !m.roles.contains_key(role) {
                    Want::Err(ErrorCode::NotFound)
                } else if m.roles.values().any(|(_, i)| i.iter().any(|x| x == role))
                    || m.tokens.iter().any(|(_, _, r)| r.iter().any(|x| x == role))
                {
                    Want::Err(ErrorCode::Conflict)
                } else {
                    next.roles.remove(role);
                    Want::Ok
                };
                (self.kms.delete_role(&self.op, role), want)
            }
            Op::CreateToken { perms, roles } => {
                let scopes = names(&PERMS, perms);
                let role_names = names(&ROLES, roles);
                let known = scopes.iter().all(|s| m.perms.contains_key(s))
                    && role_names.iter().all(|r| m.roles.contains_key(r));
                let req = NewToken {
                    name: "t".into(),
                    scopes: raw(&PERMS, perms),
                    roles: raw(&ROLES, roles),
                    ..Default::default()
                };
                let result = self.kms.create_token(&self.op, &self.app, req);
                if let Ok(created) = &result {
                    next.tokens
                        .push((created.info.id.clone(), scopes, role_names));
                }
                let want = if known {
                    Want::Ok
                } else {
                    Want::Err(ErrorCode::InvalidRequest)
                };
                (result.map(drop), want)
            }
            Op::DeleteToken(k) => {
                if m.tokens.is_empty() {
                    return (Ok(()), Want::Ok, next);
                }
                let (id, _, _) = next.tokens.remove(k % m.tokens.len());
                (self.kms.delete_token(&self.op, &id), Want::Ok)
            }
        };
        let next = if matches!(want, Want::Ok) {
            next
        } else {
            self.model.clone()
        };
        (result, want, next)
    }

    /// The listing the model predicts.
    fn expected(&self, model: &Model, before: &Listing) -> Listing {
        let mut perms = self.defaults.clone();
        for (s, implies) in &model.perms {
            // Descriptions are not modelled: keep what was listed (new ones are checked
            // only for being present).
            let description = before
                .perms
                .get(s)
                .map(|(d, _)| d.clone())
                .unwrap_or_default();
            perms.insert(s.clone(), (description, implies.clone()));
        }
        let roles = model
            .roles
            .iter()
            .map(|(n, (p, i))| (n.clone(), (p.clone(), i.clone(), model.effective(n))))
            .collect();
        let tokens = model
            .tokens
            .iter()
            .map(|(id, s, r)| (id.clone(), (s.clone(), r.clone())))
            .collect();
        Listing {
            perms,
            roles,
            tokens,
        }
    }
}

/// The implication and inheritance graphs of a listing (every permission, defaults too).
fn graphs(l: &Listing) -> (BTreeMap<String, Vec<String>>, BTreeMap<String, Vec<String>>) {
    let implies = l
        .perms
        .iter()
        .map(|(s, (_, i))| (s.clone(), i.clone()))
        .collect();
    let inherits = l
        .roles
        .iter()
        .map(|(n, (_, i, _))| (n.clone(), i.clone()))
        .collect();
    (implies, inherits)
}

#[test]
fn the_cycle_detector_of_this_test_finds_cycles() {
    let g = |edges: &[(&str, &[&str])]| -> BTreeMap<String, Vec<String>> {
        edges
            .iter()
            .map(|(n, m)| (n.to_string(), m.iter().map(|s| s.to_string()).collect()))
            .collect()
    };
    assert!(has_cycle(&g(&[("a", &["a"])])));
    assert!(has_cycle(&g(&[
        ("a", &["b"]),
        ("b", &["c"]),
        ("c", &["a"])
    ])));
    assert!(!has_cycle(&g(&[
        ("a", &["b", "c"]),
        ("b", &["c"]),
        ("c", &[])
    ])));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn policy_graphs_stay_acyclic_and_refusals_change_nothing(
        ops in proptest::collection::vec(op(), 1..40)
    ) {
        let mut env = Env::new();
        for op in &ops {
            let before = env.listing();
            let (result, want, next) = env.run(op);
            let after = env.listing();

            match (want, &result) {
                (Want::Ok, Ok(())) => {}
                (Want::Err(code), Err(e)) => prop_assert_eq!(e.code(), code, "{:?}: {}", op, e),
                (Want::Cycle, Err(e)) => {
                    prop_assert_eq!(e.code(), ErrorCode::InvalidRequest, "{:?}: {}", op, e);
                    prop_assert!(e.to_string().contains("cycle"), "{:?}: {}", op, e);
                }
                (want, got) => prop_assert!(false, "{:?}: wanted {:?}, got {:?}", op, want, got),
            }

            let (implies, inherits) = graphs(&after);
            prop_assert!(!has_cycle(&implies), "implication cycle after {:?}: {:?}", op, implies);
            prop_assert!(!has_cycle(&inherits), "inheritance cycle after {:?}: {:?}", op, inherits);

            if result.is_err() {
                prop_assert_eq!(&before, &after, "a refused {:?} changed something", op);
            }
            prop_assert_eq!(&env.expected(&next, &after), &after, "after {:?}", op);
            env.model = next;
        }
    }
}
