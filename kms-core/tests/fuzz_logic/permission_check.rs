//! Differential: a random policy (permissions with hierarchy and arbitrary implication edges,
//! roles with arbitrary inheritance), two random subjects and random nested queries, built
//! from the fuzz bytes with `arbitrary`. `Policy::validate` must refuse exactly the cyclic
//! policies and name a real cycle; for valid ones the compiled `PermissionSnapshot` must
//! agree with a naive reference evaluator on `check`, `evaluate`, `scopes_of`, `is_subset`
//! and `Policy::role_effective_scopes`.

use std::collections::BTreeSet;
use std::sync::Arc;

use arbitrary::Unstructured;
use kms_core::internal::PermissionSnapshot;
use kms_core::store::Policy;
use kms_core::{Error, Permission, PermissionQuery, Role, RoleName, Scope};

/// Scopes of up to three segments over a small alphabet, so random picks collide and form
/// hierarchies.
const SEGMENTS: [&str; 3] = ["a", "b", "c"];
/// Scopes that are never defined; a defined ancestor may still cover them.
const UNDEFINED: [&str; 6] = ["a.a.a.x", "b.c.a.y", "c.c.c.z", "d", "d.e", "a.q"];
const MAX_ROLES: usize = 6;
const MAX_QUERY_DEPTH: usize = 4;
const QUERY_TERM_BUDGET: usize = 48;

pub(crate) fn run(data: &[u8]) {
    // Running out of bytes only ends the case early.
    let _ = check(&mut Unstructured::new(data));
}

fn universe() -> Vec<String> {
    let mut out = vec!["admin".to_owned()];
    for x in SEGMENTS {
        out.push(x.to_owned());
        for y in SEGMENTS {
            out.push(format!("{x}.{y}"));
            for z in SEGMENTS {
                out.push(format!("{x}.{y}.{z}"));
            }
        }
    }
    out
}

fn scope(s: &str) -> Scope {
    Scope::parse(s).expect("fixture scopes are valid")
}

struct Subject {
    scopes: Vec<Scope>,
    roles: Vec<RoleName>,
}

fn check(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let universe = universe();
    let mut defined = Vec::new();
    for s in &universe {
        // Keep admin rare so most cases test real structure.
        let pick = if s == "admin" {
            u.ratio(1u8, 8u8)?
        } else {
            u.arbitrary::<bool>()?
        };
        if pick {
            defined.push(s.clone());
        }
    }
    let mut policy = Policy::default();
    for s in &defined {
        policy.permissions.insert(
            scope(s),
            Permission {
                scope: scope(s),
                description: String::new(),
                implies: Vec::new(),
            },
        );
    }
    // Arbitrary implication edges, self-loops included, so validation sees cycles too.
    if !defined.is_empty() {
        for _ in 0..u.int_in_range(0..=12usize)? {
            let from = scope(&defined[u.choose_index(defined.len())?]);
            let to = scope(&defined[u.choose_index(defined.len())?]);
            if let Some(p) = policy.permissions.get_mut(&from) {
                if !p.implies.contains(&to) {
                    p.implies.push(to);
                }
            }
        }
    }
    let role_names: Vec<RoleName> = (0..u.int_in_range(0..=MAX_ROLES)?)
        .map(|i| RoleName::parse(&format!("r{i}")).expect("fixture role names are valid"))
        .collect();
    for name in &role_names {
        let mut permissions = Vec::new();
        if !defined.is_empty() {
            for _ in 0..u.int_in_range(0..=3usize)? {
                let s = scope(&defined[u.choose_index(defined.len())?]);
                if !permissions.contains(&s) {
                    permissions.push(s);
                }
            }
        }
        let mut inherits = Vec::new();
        for _ in 0..u.int_in_range(0..=2usize)? {
            let r = role_names[u.choose_index(role_names.len())?].clone();
            if !inherits.contains(&r) {
                inherits.push(r);
            }
        }
        policy.roles.insert(
            name.clone(),
            Role {
                grants: Vec::new(),
                name: name.clone(),
                description: String::new(),
                permissions,
                inherits,
            },
        );
    }

    if !validation_agrees(&policy) {
        return Ok(());
    }

    let snap = PermissionSnapshot::compile(Arc::new(policy.clone()), 3);
    let subjects = [
        subject(u, &defined, &role_names)?,
        subject(u, &defined, &role_names)?,
    ];
    let held: Vec<BTreeSet<String>> = subjects
        .iter()
        .map(|s| reference_closure(&policy, &s.scopes, &s.roles))
        .collect();
    let sets: Vec<_> = subjects
        .iter()
        .map(|s| snap.effective(s.scopes.iter(), s.roles.iter()))
        .collect();

    let probes: Vec<String> = universe
        .iter()
        .cloned()
        .chain(UNDEFINED.iter().map(|s| (*s).to_owned()))
        .collect();
    for (set, held) in sets.iter().zip(&held) {
        for p in &probes {
            assert_eq!(
                snap.check(set, p),
                reference_holds(held, p),
                "check({p}) with held {held:?} on {policy:?}"
            );
        }
        assert_eq!(
            snap.scopes_of(set),
            defined_held(&policy, held),
            "scopes_of with held {held:?} on {policy:?}"
        );
        assert_eq!(set.is_admin(), held.contains("admin"));
    }
    for (i, j) in [(0, 1), (1, 0), (0, 0)] {
        let expected = policy.permissions.keys().all(|k| {
            !reference_holds(&held[i], k.as_str()) || reference_holds(&held[j], k.as_str())
        });
        assert_eq!(
            snap.is_subset(&sets[i], &sets[j]),
            expected,
            "is_subset({:?}, {:?}) on {policy:?}",
            held[i],
            held[j]
        );
    }
    for r in &role_names {
        let alone = reference_closure(&policy, &[], std::slice::from_ref(r));
        assert_eq!(
            policy.role_effective_scopes(r),
            defined_held(&policy, &alone),
            "role_effective_scopes({r}) on {policy:?}"
        );
    }

    for _ in 0..u.int_in_range(1..=4usize)? {
        let mut g = QueryGen {
            u: &mut *u,
            probes: &probes,
            held: &held,
            text: String::new(),
            terms: 0,
        };
        let expected = g.expr(0)?;
        let text = g.text;
        let query = PermissionQuery::parse(&text)
            .unwrap_or_else(|e| panic!("generated query {text:?} does not parse: {e}"));
        for k in 0..2 {
            assert_eq!(
                snap.evaluate(&sets[k], &query),
                expected[k],
                "evaluate({text}) with held {:?} on {policy:?}",
                held[k]
            );
            assert_eq!(
                query.evaluate_with(&mut |s: &str| reference_holds(&held[k], s)),
                expected[k],
                "the parsed tree of {text:?} evaluates unlike its grammar"
            );
        }
    }
    Ok(())
}

/// Checks `Policy::validate` against a reachability test for cycles; on refusal, checks the
/// error names a real cycle. Returns whether the policy is valid.
fn validation_agrees(policy: &Policy) -> bool {
    let implies = |s: &String| -> Vec<String> {
        policy
            .permissions
            .get(&scope(s))
            .map(|p| p.implies.iter().map(|t| t.to_string()).collect())
            .unwrap_or_default()
    };
    let inherits = |r: &String| -> Vec<String> {
        RoleName::parse(r)
            .ok()
            .and_then(|r| policy.roles.get(&r))
            .map(|role| role.inherits.iter().map(|i| i.to_string()).collect())
            .unwrap_or_default()
    };
    let scopes: Vec<String> = policy.permissions.keys().map(|s| s.to_string()).collect();
    let roles: Vec<String> = policy.roles.keys().map(|r| r.to_string()).collect();
    let implies_cycle = has_cycle(&scopes, implies);
    let roles_cycle = has_cycle(&roles, inherits);
    match policy.validate() {
        Ok(()) => {
            assert!(
                !implies_cycle && !roles_cycle,
                "validate accepted a cyclic policy: {policy:?}"
            );
            true
        }
        Err(Error::InvalidRequest { fields }) => {
            assert!(
                implies_cycle || roles_cycle,
                "validate refused an acyclic policy: {fields:?} {policy:?}"
            );
            let f = &fields[0];
            let named = f.problem.rsplit(": ").next().unwrap_or_default();
            let cycle: Vec<String> = named.split(" -> ").map(str::to_owned).collect();
            let ok = cycle.len() >= 2
                && cycle.first() == cycle.last()
                && cycle.windows(2).all(|w| match f.field.as_str() {
                    "implies" => implies(&w[0]).contains(&w[1]),
                    "inherits" => inherits(&w[0]).contains(&w[1]),
                    _ => false,
                });
            assert!(
                ok,
                "the error does not name a real cycle: {fields:?} on {policy:?}"
            );
            false
        }
        Err(e) => panic!("validate failed with an unexpected error: {e}"),
    }
}

/// Whether any node reaches itself.
fn has_cycle(nodes: &[String], edges: impl Fn(&String) -> Vec<String>) -> bool {
    nodes.iter().any(|start| {
        let mut seen = BTreeSet::new();
        let mut stack = edges(start);
        while let Some(n) = stack.pop() {
            if &n == start {
                return true;
            }
            if seen.insert(n.clone()) {
                stack.extend(edges(&n));
            }
        }
        false
    })
}

fn subject(
    u: &mut Unstructured<'_>,
    defined: &[String],
    roles: &[RoleName],
) -> arbitrary::Result<Subject> {
    let mut s = Subject {
        scopes: Vec::new(),
        roles: Vec::new(),
    };
    if !defined.is_empty() {
        for _ in 0..u.int_in_range(0..=3usize)? {
            s.scopes
                .push(scope(&defined[u.choose_index(defined.len())?]));
        }
    }
    if !roles.is_empty() {
        for _ in 0..u.int_in_range(0..=2usize)? {
            s.roles.push(roles[u.choose_index(roles.len())?].clone());
        }
    }
    Ok(s)
}

/// The held set: the fixpoint of grants, role permissions (with inheritance), implication
/// and hierarchy descent over defined scopes.
fn reference_closure(policy: &Policy, scopes: &[Scope], roles: &[RoleName]) -> BTreeSet<String> {
    let mut held: BTreeSet<String> = scopes.iter().map(|s| s.to_string()).collect();
    let mut pending: Vec<RoleName> = roles.to_vec();
    let mut seen = BTreeSet::new();
    while let Some(r) = pending.pop() {
        if seen.insert(r.clone()) {
            if let Some(role) = policy.roles.get(&r) {
                held.extend(role.permissions.iter().map(|s| s.to_string()));
                pending.extend(role.inherits.iter().cloned());
            }
        }
    }
    loop {
        let mut next = held.clone();
        for h in &held {
            if let Some(p) = policy.permissions.get(&scope(h)) {
                next.extend(p.implies.iter().map(|s| s.to_string()));
            }
            for d in policy.permissions.keys() {
                if is_below(d.as_str(), h) {
                    next.insert(d.to_string());
                }
            }
        }
        if next == held {
            return held;
        }
        held = next;
    }
}

/// A scope is held when `admin` is, or when it or one of its ancestors is.
fn reference_holds(held: &BTreeSet<String>, q: &str) -> bool {
    held.contains("admin") || held.iter().any(|h| q == h || is_below(q, h))
}

/// Whether `s` lies strictly below `ancestor` in the hierarchy (`a.b` below `a`).
fn is_below(s: &str, ancestor: &str) -> bool {
    s.strip_prefix(ancestor)
        .is_some_and(|rest| rest.starts_with('.'))
}

fn defined_held(policy: &Policy, held: &BTreeSet<String>) -> Vec<Scope> {
    policy
        .permissions
        .keys()
        .filter(|k| reference_holds(held, k.as_str()))
        .cloned()
        .collect()
}

/// Writes a random query following the grammar (`expr = conj (OR conj)*`,
/// `conj = atom (AND atom)*`, `atom = scope | '(' expr ')'`) and evaluates it for both
/// subjects as it goes, independently of the parser.
struct QueryGen<'u, 'd, 'p> {
    u: &'u mut Unstructured<'d>,
    probes: &'p [String],
    held: &'p [BTreeSet<String>],
    text: String,
    terms: usize,
}

impl QueryGen<'_, '_, '_> {
    fn expr(&mut self, depth: usize) -> arbitrary::Result<[bool; 2]> {
        let mut any = [false; 2];
        for i in 0..self.fanout()? {
            if i > 0 {
                self.op(false)?;
            }
            let v = self.conj(depth)?;
            any = [any[0] || v[0], any[1] || v[1]];
        }
        Ok(any)
    }

    fn conj(&mut self, depth: usize) -> arbitrary::Result<[bool; 2]> {
        let mut all = [true; 2];
        for i in 0..self.fanout()? {
            if i > 0 {
                self.op(true)?;
            }
            let v = self.atom(depth)?;
            all = [all[0] && v[0], all[1] && v[1]];
        }
        Ok(all)
    }

    fn atom(&mut self, depth: usize) -> arbitrary::Result<[bool; 2]> {
        if depth < MAX_QUERY_DEPTH && self.terms < QUERY_TERM_BUDGET && self.u.ratio(1u8, 3u8)? {
            self.text.push('(');
            self.space()?;
            let v = self.expr(depth + 1)?;
            self.space()?;
            self.text.push(')');
            return Ok(v);
        }
        let term = &self.probes[self.u.choose_index(self.probes.len())?];
        self.terms += 1;
        self.text.push_str(term);
        Ok([
            reference_holds(&self.held[0], term),
            reference_holds(&self.held[1], term),
        ])
    }

    fn fanout(&mut self) -> arbitrary::Result<usize> {
        if self.terms >= QUERY_TERM_BUDGET {
            Ok(1)
        } else {
            self.u.int_in_range(1..=3)
        }
    }

    fn op(&mut self, and: bool) -> arbitrary::Result<()> {
        let word = match (and, self.u.arbitrary::<bool>()?) {
            (true, false) => "AND",
            (true, true) => "&&",
            (false, false) => "OR",
            (false, true) => "||",
        };
        self.text.push(' ');
        self.space()?;
        self.text.push_str(word);
        self.text.push(' ');
        self.space()
    }

    fn space(&mut self) -> arbitrary::Result<()> {
        let ws = ["", "", " ", "\t", "\n"];
        self.text.push_str(ws[self.u.choose_index(ws.len())?]);
        Ok(())
    }
}
