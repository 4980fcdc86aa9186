//! One generated RBAC policy, the same for kms and for every engine it is compared with in
//! `benches/peers.rs`: roles in two inheritance chains, grants spread over the roles, one
//! user, and an allowed and a denied request.
//!
//! Included with `#[path = "common/rbac.rs"] mod rbac;` by the benches that need it.

use std::collections::HashMap;
use std::sync::Arc;

use kms_benches::{granted_scope, SetupResult};
use kms_core::internal::{EffectiveSet, PermissionSnapshot};
use kms_core::store::{Mutation, Policy, Store};
use kms_core::{
    Condition, ConditionLimits, ConditionalGrant, GrantTarget, Kms, NewToken, Permission, Role,
    RoleName, Scope,
};
use kms_store::MemoryStore;

/// A role of an [`Rbac`] policy.
#[derive(Debug)]
pub(crate) struct RbacRole {
    /// Its name (a valid kms role name, a casbin subject and a cedar entity id alike).
    pub(crate) name: String,
    /// The role whose grants this one also holds (the level below it in its chain).
    pub(crate) inherits: Option<usize>,
    /// Permissions granted to this role directly.
    pub(crate) grants: Vec<String>,
}

/// An RBAC policy of `grants` grants over two role chains of depth `depth`.
///
/// - Roles `held-l0 … held-l{d-1}` and `other-l0 … other-l{d-1}`; `held-l{i}` inherits
///   `held-l{i-1}` (and likewise for `other`), so the top of a chain holds every grant
///   of the chain, `d - 1` inheritance steps above its bottom.
/// - Grant `k` is the scope `granted_scope(k)` (three segments, all distinct, no
///   implications), granted to role `k % (2d)` of the interleaved list `held-l0, other-l0,
///   held-l1, other-l1, …`.
/// - The user [`USER`] is assigned `held-l{d-1}`, the top of the `held` chain only.
/// - The allowed request is a permission granted to `held-l0`, the bottom of the user's
///   chain, so every engine walks the whole chain; of those grants the one nearest the
///   middle of the grant list is taken, so engines that scan policies in order and stop at
///   the first allow do not get the first policy for free.
/// - The denied request is a permission granted to `other-l0`: defined, but held only in
///   the chain the user does not have.
#[derive(Debug)]
pub(crate) struct Rbac {
    /// Total grants.
    pub(crate) grants: usize,
    /// Depth of each role chain.
    pub(crate) depth: usize,
    /// The roles, interleaved as described above.
    pub(crate) roles: Vec<RbacRole>,
    /// The index in `roles` of the role assigned to [`USER`].
    pub(crate) user_role: usize,
    /// The permission of the allowed request.
    pub(crate) allowed: String,
    /// The permission of the denied request.
    pub(crate) denied: String,
}

/// The one user of an [`Rbac`] policy.
pub(crate) const USER: &str = "alice";

impl Rbac {
    /// Generates the policy described on [`Rbac`]. `grants` must be at least 2, so that
    /// both chains' bottom roles have a grant.
    pub(crate) fn new(grants: usize, depth: usize) -> SetupResult<Self> {
        if grants < 2 || depth == 0 {
            return Err("an Rbac policy needs at least 2 grants and depth 1".into());
        }
        let n = 2 * depth;
        let mut roles: Vec<RbacRole> = (0..n)
            .map(|r| {
                let chain = if r.is_multiple_of(2) { "held" } else { "other" };
                RbacRole {
                    name: format!("{chain}-l{}", r / 2),
                    inherits: (r >= 2).then(|| r - 2),
                    grants: Vec::new(),
                }
            })
            .collect();
        for k in 0..grants {
            roles[k % n].grants.push(granted_scope(k));
        }
        // Grants of role 0 are k = 0, n, 2n, …: the one at or below the middle.
        let allowed = granted_scope((grants / 2) / n * n);
        let denied = granted_scope(1);
        Ok(Rbac {
            grants,
            depth,
            roles,
            user_role: n - 2,
            allowed,
            denied,
        })
    }

    /// `(role, permission)` for every grant, in grant order.
    pub(crate) fn grant_list(&self) -> Vec<(&str, &str)> {
        let n = self.roles.len();
        (0..self.grants)
            .map(|k| {
                let role = &self.roles[k % n];
                (role.name.as_str(), role.grants[k / n].as_str())
            })
            .collect()
    }

    /// Every permission the user holds, by walking the chain from its role down.
    pub(crate) fn user_permissions(&self) -> Vec<&str> {
        let mut out = Vec::new();
        let mut at = Some(self.user_role);
        while let Some(r) = at {
            out.extend(self.roles[r].grants.iter().map(String::as_str));
            at = self.roles[r].inherits;
        }
        out
    }

    /// The policy compiled into a kms snapshot, and the user's effective set in it.
    pub(crate) fn kms(&self) -> SetupResult<(PermissionSnapshot, EffectiveSet, RoleName)> {
        let mut policy = Policy::default();
        for (_, permission) in self.grant_list() {
            let scope = Scope::parse(permission)?;
            policy.permissions.insert(
                scope.clone(),
                Permission {
                    scope,
                    description: String::new(),
                    implies: Vec::new(),
                },
            );
        }
        for role in &self.roles {
            let name = RoleName::parse(&role.name)?;
            let inherits = match role.inherits {
                Some(i) => vec![RoleName::parse(&self.roles[i].name)?],
                None => Vec::new(),
            };
            let permissions = role
                .grants
                .iter()
                .map(|s| Scope::parse(s))
                .collect::<Result<Vec<_>, _>>()?;
            policy.roles.insert(
                name.clone(),
                Role {
                    grants: Vec::new(),
                    name,
                    description: String::new(),
                    permissions,
                    inherits,
                },
            );
        }
        policy.validate()?;
        let snapshot = PermissionSnapshot::compile(Arc::new(policy), 1);
        let top = RoleName::parse(&self.roles[self.user_role].name)?;
        let set = snapshot.effective(std::iter::empty(), std::iter::once(&top));
        Ok((snapshot, set, top))
    }

    /// The policy in a running service over a [`MemoryStore`], and a token holding the
    /// user's role (the top of the `held` chain), verified once so that it is in the
    /// verified-key cache (kept an hour, longer than any benchmark takes).
    ///
    /// With `when`, every grant is conditional: each role grants its permissions only
    /// while `when` holds (the role's `grants`, none in `permissions`); without it, the
    /// policy of [`kms`](Self::kms).
    pub(crate) fn service(&self, when: Option<&str>) -> SetupResult<(Kms, String)> {
        let store = Arc::new(MemoryStore::new());
        let kms = Kms::builder(store.clone())
            .hash_params(kms_core::dangerous::insecure_hash_params())
            .cache_ttl(std::time::Duration::from_secs(3_600))
            .build()?;
        kms.initialize()?;
        let condition = when
            .map(|w| Condition::parse(w, &ConditionLimits::default()).map(Arc::new))
            .transpose()?;
        let mut batch = Vec::with_capacity(self.grants + self.roles.len());
        for (_, permission) in self.grant_list() {
            let scope = Scope::parse(permission)?;
            batch.push(Mutation::InsertPermission(Permission {
                scope,
                description: String::new(),
                implies: Vec::new(),
            }));
        }
        for role in &self.roles {
            let name = RoleName::parse(&role.name)?;
            let inherits = match role.inherits {
                Some(i) => vec![RoleName::parse(&self.roles[i].name)?],
                None => Vec::new(),
            };
            let scopes = role
                .grants
                .iter()
                .map(|s| Scope::parse(s))
                .collect::<Result<Vec<_>, _>>()?;
            let (permissions, grants) = match &condition {
                None => (scopes, Vec::new()),
                Some(when) => (
                    Vec::new(),
                    scopes
                        .into_iter()
                        .map(|s| ConditionalGrant {
                            target: GrantTarget::Scope(s),
                            when: Arc::clone(when),
                        })
                        .collect(),
                ),
            };
            batch.push(Mutation::PutRole(Role {
                name,
                description: String::new(),
                permissions,
                inherits,
                grants,
            }));
        }
        // One transaction; the service hears the change and compiles the policy once.
        store.apply(&batch)?;
        let token = kms
            .create_token(
                &kms.operator(),
                kms_core::SYSTEM_APP_ID,
                NewToken {
                    name: USER.to_owned(),
                    roles: vec![self.roles[self.user_role].name.clone()],
                    ..NewToken::default()
                },
            )?
            .token;
        if kms.verify_token(&token, None, None)?.code() != kms_core::VerifyCode::Valid {
            return Err("the service's token does not verify".into());
        }
        Ok((kms, token))
    }

    /// The "bare string-intern plus set lookup" floor over this policy: every granted
    /// permission interned in a `HashMap<Box<str>, u32>`, the user's as a bit set.
    pub(crate) fn floor(&self) -> Floor {
        let index: HashMap<Box<str>, u32> = self
            .grant_list()
            .into_iter()
            .enumerate()
            .map(|(i, (_, p))| (Box::from(p), i as u32))
            .collect();
        let mut bits = vec![0u64; index.len().div_ceil(64)];
        for p in self.user_permissions() {
            if let Some(&id) = index.get(p) {
                bits[(id / 64) as usize] |= 1 << (id % 64);
            }
        }
        Floor { index, bits }
    }
}

/// The least work any check by permission name can do: one hash lookup, one bit test.
#[derive(Debug)]
pub(crate) struct Floor {
    index: HashMap<Box<str>, u32>,
    bits: Vec<u64>,
}

impl Floor {
    /// Whether `permission` is interned and its bit is set.
    pub(crate) fn holds(&self, permission: &str) -> bool {
        self.index.get(permission).is_some_and(|&id| {
            self.bits
                .get((id / 64) as usize)
                .is_some_and(|w| w & (1 << (id % 64)) != 0)
        })
    }
}
