//! The compiled permission snapshot: interned scope ids, the hierarchy and implication
//! edges, and each role's transitive closure as a bit set. A check is a hash lookup and a
//! bit test, with no allocation.

use std::collections::HashMap;
use std::sync::Arc;

use crate::policy::query::{Node, PermissionQuery};
use crate::policy::scope::{RoleName, Scope, ADMIN};
use crate::policy::Policy;

/// The permissions a subject holds, compiled against one snapshot generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveSet {
    generation: u64,
    all: bool,
    bits: Box<[u64]>,
}

impl EffectiveSet {
    /// The snapshot generation this set was compiled against.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether the set holds `admin`, which covers everything.
    pub fn is_admin(&self) -> bool {
        self.all
    }

    fn test(&self, id: u32) -> bool {
        self.all
            || self
                .bits
                .get((id / 64) as usize)
                .is_some_and(|w| w & (1u64 << (id % 64)) != 0)
    }

    /// Approximate heap bytes held by the set.
    pub fn heap_bytes(&self) -> usize {
        self.bits.len() * 8
    }
}

/// An immutable, compiled view of a [`Policy`].
#[derive(Debug)]
pub struct PermissionSnapshot {
    generation: u64,
    policy: Arc<Policy>,
    index: HashMap<Box<str>, u32>,
    names: Vec<Scope>,
    edges: Vec<Vec<u32>>,
    admin: Option<u32>,
    roles: HashMap<RoleName, Arc<EffectiveSet>>,
    words: usize,
    /// The store's policy version this was loaded at (see `store::POLICY_VERSION_KEY`).
    store_version: u64,
}

impl PermissionSnapshot {
    /// Compiles `policy` (which should already be valid) as generation `generation`.
    pub fn compile(policy: Arc<Policy>, generation: u64) -> Self {
        let names: Vec<Scope> = policy.permissions.keys().cloned().collect();
        let index: HashMap<Box<str>, u32> = names
            .iter()
            .enumerate()
            .map(|(i, s)| (Box::from(s.as_str()), i as u32))
            .collect();
        let mut edges: Vec<Vec<u32>> = vec![Vec::new(); names.len()];
        for (i, s) in names.iter().enumerate() {
            // Hierarchy: the nearest defined ancestor covers this scope.
            if let Some(parent) = Scope::ancestors(s.as_str()).find_map(|a| index.get(a)) {
                edges[*parent as usize].push(i as u32);
            }
            if let Some(p) = policy.permissions.get(s) {
                edges[i].extend(
                    p.implies
                        .iter()
                        .filter_map(|t| index.get(t.as_str()).copied()),
                );
            }
        }
        let words = names.len().div_ceil(64);
        let mut snap = PermissionSnapshot {
            generation,
            admin: index.get(ADMIN).copied(),
            policy: Arc::clone(&policy),
            index,
            names,
            edges,
            roles: HashMap::new(),
            words,
            store_version: 0,
        };
        let roles = policy
            .roles
            .keys()
            .map(|r| {
                let start = snap
                    .role_direct(r)
                    .iter()
                    .filter_map(|s| snap.index.get(s.as_str()).copied())
                    .collect();
                let set = snap.closure_from(start, vec![0u64; snap.words].into_boxed_slice());
                (r.clone(), Arc::new(set))
            })
            .collect();
        snap.roles = roles;
        snap
    }

    /// The generation number; it increases with every policy change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The same snapshot, marked as loaded at the store's policy version `version`.
    pub(crate) fn at_store_version(mut self, version: u64) -> Self {
        self.store_version = version;
        self
    }

    /// The store's policy version this snapshot was loaded at: a change validated against
    /// it commits only while the store is still at that version.
    pub(crate) fn store_version(&self) -> u64 {
        self.store_version
    }

    /// The policy this snapshot was compiled from.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// Number of interned scopes.
    pub fn scope_count(&self) -> usize {
        self.names.len()
    }

    /// The permissions of `role` and every role it inherits, directly named.
    fn role_direct(&self, role: &RoleName) -> Vec<Scope> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut stack = vec![role];
        while let Some(r) = stack.pop() {
            if !seen.insert(r) {
                continue;
            }
            if let Some(def) = self.policy.roles.get(r) {
                out.extend(def.permissions.iter().cloned());
                stack.extend(def.inherits.iter());
            }
        }
        out
    }

    /// The effective set of a subject granted `scopes` and `roles`. Names that are not
    /// defined in this snapshot grant nothing.
    pub fn effective<'a>(
        &self,
        scopes: impl IntoIterator<Item = &'a Scope>,
        roles: impl IntoIterator<Item = &'a RoleName>,
    ) -> EffectiveSet {
        let mut bits = vec![0u64; self.words].into_boxed_slice();
        for r in roles {
            if let Some(set) = self.roles.get(r) {
                for (dst, src) in bits.iter_mut().zip(set.bits.iter()) {
                    *dst |= *src;
                }
            }
        }
        let start: Vec<u32> = scopes
            .into_iter()
            .filter_map(|s| self.index.get(s.as_str()).copied())
            .collect();
        self.closure_from(start, bits)
    }

    fn closure_from(&self, start: Vec<u32>, mut bits: Box<[u64]>) -> EffectiveSet {
        let mut stack = start;
        while let Some(id) = stack.pop() {
            let (w, b) = ((id / 64) as usize, 1u64 << (id % 64));
            if bits[w] & b != 0 {
                continue;
            }
            bits[w] |= b;
            for &next in &self.edges[id as usize] {
                let (nw, nb) = ((next / 64) as usize, 1u64 << (next % 64));
                if bits[nw] & nb == 0 {
                    stack.push(next);
                }
            }
        }
        let all = self
            .admin
            .is_some_and(|a| bits[(a / 64) as usize] & (1 << (a % 64)) != 0);
        EffectiveSet {
            generation: self.generation,
            all,
            bits,
        }
    }

    /// Whether `set` covers `scope`, through the hierarchy, implication or `admin`.
    /// A set compiled against another generation covers nothing (fail closed).
    pub fn check(&self, set: &EffectiveSet, scope: &str) -> bool {
        if set.generation != self.generation {
            return false;
        }
        if set.all {
            return true;
        }
        if let Some(&id) = self.index.get(scope) {
            return set.test(id);
        }
        // An undefined scope is covered when a defined ancestor is held.
        Scope::ancestors(scope).any(|a| self.index.get(a).is_some_and(|&id| set.test(id)))
    }

    /// Whether `set` holds `scope` as something the policy defines: covered by
    /// [`check`](Self::check), and the scope or one of its ancestors is a permission of this
    /// snapshot. Unlike `check`, `admin` does not cover scopes the policy does not have, so
    /// a permission deleted from the policy is held by nobody.
    pub(crate) fn holds_defined(&self, set: &EffectiveSet, scope: &str) -> bool {
        self.check(set, scope)
            && (self.index.contains_key(scope)
                || Scope::ancestors(scope).any(|a| self.index.contains_key(a)))
    }

    /// Whether `set` satisfies `query`.
    pub fn evaluate(&self, set: &EffectiveSet, query: &PermissionQuery) -> bool {
        fn eval(s: &PermissionSnapshot, set: &EffectiveSet, n: &Node) -> bool {
            match n {
                Node::Scope(x) => s.check(set, x.as_str()),
                Node::All(v) => v.iter().all(|c| eval(s, set, c)),
                Node::Any(v) => v.iter().any(|c| eval(s, set, c)),
            }
        }
        eval(self, set, &query.root)
    }

    /// The defined scopes `set` holds, sorted.
    pub fn scopes_of(&self, set: &EffectiveSet) -> Vec<Scope> {
        self.names
            .iter()
            .enumerate()
            .filter(|(i, _)| set.test(*i as u32))
            .map(|(_, s)| s.clone())
            .collect()
    }

    /// `base` with every set of `extra` added (the conditional grants that hold).
    pub fn union<'a>(
        &self,
        base: &EffectiveSet,
        extra: impl IntoIterator<Item = &'a EffectiveSet>,
    ) -> EffectiveSet {
        let mut out = base.clone();
        for set in extra {
            out.all |= set.all;
            for (o, b) in out.bits.iter_mut().zip(set.bits.iter()) {
                *o |= *b;
            }
        }
        out
    }

    /// Whether every scope of `inner` is also held by `outer`: the test against privilege
    /// escalation.
    pub fn is_subset(&self, inner: &EffectiveSet, outer: &EffectiveSet) -> bool {
        if outer.all {
            return true;
        }
        if inner.all {
            return false;
        }
        inner
            .bits
            .iter()
            .zip(outer.bits.iter())
            .all(|(i, o)| i & !o == 0)
    }
}
