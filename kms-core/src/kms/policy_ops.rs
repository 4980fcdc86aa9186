//! Permission and role definitions.

use serde::Serialize;

use super::audit_log::Audit;
use super::{Caller, Kms};
use crate::error::{Error, FieldErrors, Result};
use crate::policy::scope::{shown, RoleName, Scope};
use crate::policy::snapshot::PermissionSnapshot;
use crate::policy::{Permission, Policy, Role};
use crate::requests::{
    validate_description, validate_roles, validate_scopes, NewPermission, NewRole, RoleUpdate,
};
use crate::store::Mutation;

/// Most permissions one `create_permissions` call defines.
const MAX_PERMISSIONS_PER_CALL: usize = 10_000;

/// A role as shown to callers, with every scope it grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleView {
    /// The role's name.
    pub name: RoleName,
    /// What it is for.
    pub description: String,
    /// Scopes granted directly.
    pub permissions: Vec<Scope>,
    /// Roles inherited.
    pub inherits: Vec<RoleName>,
    /// Every scope the role grants, through inheritance, implication and the hierarchy.
    pub effective: Vec<Scope>,
    /// Scopes it grants only while a condition holds (absent when there are none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<crate::policy::GrantInput>,
}

impl Kms {
    /// Defines one permission (`permission.write`; system callers only).
    pub fn create_permission(&self, caller: &Caller, req: NewPermission) -> Result<Permission> {
        let mut created = self.retrying_stale_policy(|| {
            self.create_permissions_inner(caller, vec![req.clone()], "")
        })?;
        created
            .pop()
            .ok_or_else(|| Error::internal("no permission was created"))
    }

    /// Defines several permissions at once: all of them or, on any error, none.
    pub fn create_permissions(
        &self,
        caller: &Caller,
        reqs: Vec<NewPermission>,
    ) -> Result<Vec<Permission>> {
        if reqs.is_empty() || reqs.len() > MAX_PERMISSIONS_PER_CALL {
            return Err(Error::invalid(
                "permissions",
                format!("must list 1 to {MAX_PERMISSIONS_PER_CALL} permissions"),
            ));
        }
        self.retrying_stale_policy(|| {
            self.create_permissions_inner(caller, reqs.clone(), "permissions")
        })
    }

    fn create_permissions_inner(
        &self,
        caller: &Caller,
        reqs: Vec<NewPermission>,
        list: &str,
    ) -> Result<Vec<Permission>> {
        let _guard = self.policy_guard()?;
        let snap = self.snapshot()?;
        caller.require_global(&snap, "permission.write")?;
        let mut errs = FieldErrors::default();
        let mut perms = Vec::with_capacity(reqs.len());
        let mut policy = Policy::clone(snap.policy());
        for (i, req) in reqs.into_iter().enumerate() {
            let at = |f: &str| {
                if list.is_empty() {
                    f.to_owned()
                } else {
                    format!("{list}[{i}].{f}")
                }
            };
            let mut item = FieldErrors::default();
            let scope = item.take(Scope::parse_field(&req.scope, &at("scope")));
            let description = validate_description(&mut item, req.description.as_deref());
            let implies = validate_scopes(&mut item, &at("implies"), &req.implies);
            for (j, target) in implies.iter().enumerate() {
                if caller.require(&snap, target.as_str()).is_err() {
                    item.push(
                        format!("{}[{j}]", at("implies")),
                        format!("you cannot imply {target}, which you do not hold"),
                    );
                }
            }
            if let Some(scope) = scope {
                if policy.permissions.contains_key(&scope) {
                    if snap.policy().permissions.contains_key(&scope) {
                        return Err(Error::Conflict(format!(
                            "permission {scope} already exists"
                        )));
                    }
                    item.push(at("scope"), format!("{scope} is listed twice"));
                }
                let p = Permission {
                    scope: scope.clone(),
                    description,
                    implies,
                };
                policy.permissions.insert(scope, p.clone());
                perms.push(p);
            }
            if let Err(crate::error::Error::InvalidRequest { fields }) = item.finish() {
                for f in fields {
                    errs.push(f.field, f.problem);
                }
            }
        }
        errs.finish()?;
        policy.validate().map_err(|e| prefix_fields(e, list))?;
        let batch: Vec<Mutation> = perms
            .iter()
            .cloned()
            .map(Mutation::InsertPermission)
            .collect();
        let scopes: Vec<&str> = perms.iter().map(|p| p.scope.as_str()).collect();
        let audit = Audit::success("permission.create", scopes.join(" "))
            .details(serde_json::json!({"count": perms.len()}));
        self.commit(Some(caller), audit, expecting(&snap, batch))?;
        Ok(perms)
    }

    /// Every defined permission, by scope (`permission.read`).
    pub fn list_permissions(&self, caller: &Caller) -> Result<Vec<Permission>> {
        let snap = self.snapshot()?;
        caller.require(&snap, "permission.read")?;
        Ok(snap.policy().permissions.values().cloned().collect())
    }

    /// Deletes a permission (`permission.write`; system callers only). `Conflict` while a
    /// token or role grants it or another permission implies it.
    pub fn delete_permission(&self, caller: &Caller, scope: &str) -> Result<()> {
        self.retrying_stale_policy(|| self.delete_permission_once(caller, scope))
    }

    fn delete_permission_once(&self, caller: &Caller, scope: &str) -> Result<()> {
        let _guard = self.policy_guard()?;
        let snap = self.snapshot()?;
        caller.require_global(&snap, "permission.write")?;
        let not_found = || Error::NotFound(format!("permission {} does not exist", shown(scope)));
        let scope = Scope::parse(scope).map_err(|_| not_found())?;
        let policy = snap.policy();
        if !policy.permissions.contains_key(&scope) {
            return Err(not_found());
        }
        self.deletion_refusal(policy, &scope, &std::collections::BTreeSet::new())?;
        self.commit(
            Some(caller),
            Audit::success("permission.delete", scope.to_string()),
            expecting(&snap, vec![Mutation::DeletePermission(scope)]),
        )?;
        Ok(())
    }

    /// Why `scope` cannot be deleted together with `deleting` (the other scopes of a bulk
    /// deletion, which may imply it): `admin`, a role granting it, a permission implying
    /// it, a token granted it.
    fn deletion_refusal(
        &self,
        policy: &Policy,
        scope: &Scope,
        deleting: &std::collections::BTreeSet<Scope>,
    ) -> Result<()> {
        let scope = scope.clone();
        if scope.as_str() == crate::policy::scope::ADMIN {
            return Err(Error::Conflict(
                "the admin permission cannot be deleted".into(),
            ));
        }
        if let Some(r) = policy.roles.values().find(|r| {
            r.permissions.contains(&scope)
                || r.grants
                    .iter()
                    .any(|g| g.target == crate::policy::GrantTarget::Scope(scope.clone()))
        }) {
            return Err(Error::Conflict(format!(
                "permission {scope} is granted by role {}",
                r.name
            )));
        }
        if let Some(p) = policy
            .permissions
            .values()
            .find(|p| p.implies.contains(&scope) && !deleting.contains(&p.scope))
        {
            return Err(Error::Conflict(format!(
                "permission {scope} is implied by {}",
                p.scope
            )));
        }
        if self.inner.store.scope_is_granted(&scope)? {
            return Err(Error::Conflict(format!(
                "permission {scope} is granted to a token"
            )));
        }
        Ok(())
    }

    /// Deletes several permissions at once (`permission.write`; system callers only), all
    /// or nothing: each is checked as [`delete_permission`](Self::delete_permission) checks
    /// it, except that permissions deleted together may imply each other. One audit event
    /// (`permission.bulk_delete`).
    pub fn delete_permissions(&self, caller: &Caller, scopes: &[String]) -> Result<usize> {
        if scopes.is_empty() || scopes.len() > MAX_PERMISSIONS_PER_CALL {
            return Err(Error::invalid(
                "scopes",
                format!("must list 1 to {MAX_PERMISSIONS_PER_CALL} permissions"),
            ));
        }
        self.retrying_stale_policy(|| {
            let _guard = self.policy_guard()?;
            let snap = self.snapshot()?;
            caller.require_global(&snap, "permission.write")?;
            let policy = snap.policy();
            let mut set = std::collections::BTreeSet::new();
            for (i, raw) in scopes.iter().enumerate() {
                let scope = Scope::parse(raw)
                    .ok()
                    .filter(|s| policy.permissions.contains_key(s))
                    .ok_or_else(|| {
                        Error::NotFound(format!(
                            "permission {} (scopes[{i}]) does not exist",
                            shown(raw)
                        ))
                    })?;
                set.insert(scope);
            }
            for scope in &set {
                self.deletion_refusal(policy, scope, &set)?;
            }
            let names: Vec<&str> = set.iter().map(Scope::as_str).collect();
            let audit = Audit::success("permission.bulk_delete", names.join(","))
                .details(serde_json::json!({"count": set.len(), "scopes": names}));
            let batch = set
                .iter()
                .cloned()
                .map(Mutation::DeletePermission)
                .collect();
            self.commit(Some(caller), audit, expecting(&snap, batch))?;
            Ok(set.len())
        })
    }

    /// Defines a role (`role.write`; system callers only). The caller must hold everything
    /// the role would grant.
    pub fn create_role(&self, caller: &Caller, req: NewRole) -> Result<RoleView> {
        self.retrying_stale_policy(|| self.create_role_once(caller, req.clone()))
    }

    fn create_role_once(&self, caller: &Caller, req: NewRole) -> Result<RoleView> {
        let _guard = self.policy_guard()?;
        let snap = self.snapshot()?;
        caller.require_global(&snap, "role.write")?;
        let mut errs = FieldErrors::default();
        let name = errs.take(RoleName::parse_field(&req.name, "name"));
        let description = validate_description(&mut errs, req.description.as_deref());
        let permissions = validate_scopes(&mut errs, "permissions", &req.permissions);
        let inherits = validate_roles(&mut errs, "inherits", &req.inherits);
        let grants = self.validate_role_grants(&mut errs, &snap, &req.grants);
        errs.finish()?;
        let Some(name) = name else {
            return Err(Error::internal("validation passed without a name"));
        };
        if snap.policy().roles.contains_key(&name) {
            return Err(Error::Conflict(format!("role {name} already exists")));
        }
        self.put_role(
            caller,
            &snap,
            Role {
                name,
                description,
                permissions,
                inherits,
                grants,
            },
        )
    }

    /// The `grants` of a role: scopes only, each with a condition (one without is a
    /// permission like the others and joins them).
    fn validate_role_grants(
        &self,
        errs: &mut FieldErrors,
        snap: &PermissionSnapshot,
        raw: &[crate::policy::GrantInput],
    ) -> Vec<crate::policy::ConditionalGrant> {
        for (i, g) in raw.iter().enumerate() {
            if g.role.is_some() {
                errs.push(
                    format!("grants[{i}].role"),
                    "a role's grants name scopes; roles are inherited with `inherits`",
                );
            }
            if g.when.is_none() {
                errs.push(
                    format!("grants[{i}].when"),
                    "a role's grant without a condition belongs in `permissions`",
                );
            }
        }
        let (mut scopes, mut roles) = (Vec::new(), Vec::new());
        self.validate_grants(errs, snap, raw, &mut scopes, &mut roles)
    }

    /// Changes a role's description, permissions or inheritance (`role.write`; system
    /// callers only). The caller must hold everything the role grants, before the change
    /// and after it.
    pub fn update_role(&self, caller: &Caller, name: &str, req: RoleUpdate) -> Result<RoleView> {
        self.retrying_stale_policy(|| self.update_role_once(caller, name, req.clone()))
    }

    fn update_role_once(&self, caller: &Caller, name: &str, req: RoleUpdate) -> Result<RoleView> {
        let _guard = self.policy_guard()?;
        let snap = self.snapshot()?;
        caller.require_global(&snap, "role.write")?;
        let stored = self.find_role(&snap, name)?;
        // Changing a role changes what everyone holding it holds: the caller must hold what
        // it grants now (no demoting a stronger role) as well as after (put_role).
        caller.require_superset(&snap, &snap.effective([], [&stored.name]))?;
        let mut role = stored.clone();
        let mut errs = FieldErrors::default();
        if req.description.is_some() {
            role.description = validate_description(&mut errs, req.description.as_deref());
        }
        if let Some(p) = &req.permissions {
            role.permissions = validate_scopes(&mut errs, "permissions", p);
        }
        if let Some(i) = &req.inherits {
            role.inherits = validate_roles(&mut errs, "inherits", i);
        }
        if let Some(g) = &req.grants {
            role.grants = self.validate_role_grants(&mut errs, &snap, g);
        }
        errs.finish()?;
        if role == *stored {
            // Nothing changes, so nothing is written or audited.
            return Ok(role_view(snap.policy(), &role));
        }
        self.put_role(caller, &snap, role)
    }

    fn put_role(&self, caller: &Caller, snap: &PermissionSnapshot, role: Role) -> Result<RoleView> {
        let mut policy = Policy::clone(snap.policy());
        policy.roles.insert(role.name.clone(), role.clone());
        policy.validate()?;
        let candidate =
            PermissionSnapshot::compile(std::sync::Arc::new(policy.clone()), snap.generation());
        // Its conditional scopes count as if they always held: no one hands them out
        // without holding them.
        let conditional: Vec<Scope> = role
            .grants
            .iter()
            .filter_map(|g| match &g.target {
                crate::policy::GrantTarget::Scope(s) => Some(s.clone()),
                crate::policy::GrantTarget::Role(_) => None,
            })
            .collect();
        let wanted = candidate.effective(conditional.iter(), [&role.name]);
        caller.require_superset(&candidate, &wanted)?;
        let audit = Audit::success("role.put", role.name.to_string()).details(
            serde_json::json!({"permissions": role.permissions, "inherits": role.inherits, "grants": role.grants}),
        );
        self.commit(
            Some(caller),
            audit,
            expecting(snap, vec![Mutation::PutRole(role.clone())]),
        )?;
        Ok(role_view(&policy, &role))
    }

    /// Every role, by name (`role.read`).
    pub fn list_roles(&self, caller: &Caller) -> Result<Vec<RoleView>> {
        let snap = self.snapshot()?;
        caller.require(&snap, "role.read")?;
        Ok(snap
            .policy()
            .roles
            .values()
            .map(|r| role_view(snap.policy(), r))
            .collect())
    }

    /// One role (`role.read`).
    pub fn get_role(&self, caller: &Caller, name: &str) -> Result<RoleView> {
        let snap = self.snapshot()?;
        caller.require(&snap, "role.read")?;
        Ok(role_view(snap.policy(), self.find_role(&snap, name)?))
    }

    /// Deletes a role (`role.write`; system callers only). `Conflict` while another role
    /// inherits it or a token holds it.
    pub fn delete_role(&self, caller: &Caller, name: &str) -> Result<()> {
        self.retrying_stale_policy(|| self.delete_role_once(caller, name))
    }

    fn delete_role_once(&self, caller: &Caller, name: &str) -> Result<()> {
        let _guard = self.policy_guard()?;
        let snap = self.snapshot()?;
        caller.require_global(&snap, "role.write")?;
        let role = self.find_role(&snap, name)?;
        caller.require_superset(&snap, &snap.effective([], [&role.name]))?;
        if let Some(r) = snap
            .policy()
            .roles
            .values()
            .find(|r| r.inherits.contains(&role.name))
        {
            return Err(Error::Conflict(format!(
                "role {} is inherited by role {}",
                role.name, r.name
            )));
        }
        if self.inner.store.role_is_granted(&role.name)? {
            return Err(Error::Conflict(format!(
                "role {} is granted to a token",
                role.name
            )));
        }
        self.commit(
            Some(caller),
            Audit::success("role.delete", role.name.to_string()),
            expecting(&snap, vec![Mutation::DeleteRole(role.name.clone())]),
        )?;
        Ok(())
    }

    fn find_role<'a>(&self, snap: &'a PermissionSnapshot, name: &str) -> Result<&'a Role> {
        RoleName::parse(name)
            .ok()
            .and_then(|n| snap.policy().roles.get(&n))
            .ok_or_else(|| Error::NotFound(format!("role {} does not exist", shown(name))))
    }

    /// Runs a policy change; when it is refused because another writer (another process on
    /// the same database) changed the permissions or roles after the snapshot it was
    /// validated against was loaded, reloads and runs it again, against the new state.
    fn retrying_stale_policy<T>(&self, mut change: impl FnMut() -> Result<T>) -> Result<T> {
        for _ in 1..POLICY_CHANGE_ATTEMPTS {
            match change() {
                // A stale snapshot can also make a valid change look invalid (an unknown
                // permission another writer just defined).
                Err(Error::Conflict(_) | Error::InvalidRequest { .. } | Error::NotFound(_))
                    if self.inner.policy_changed_in_store()? =>
                {
                    self.inner.reload_policy()?;
                }
                outcome => return outcome,
            }
        }
        change()
    }

    /// Serialises policy changes made through this process, so that each is validated
    /// against the state it is applied to.
    fn policy_guard(&self) -> Result<std::sync::MutexGuard<'_, ()>> {
        self.inner
            .policy_lock
            .lock()
            .map_err(|_| Error::internal("the policy lock is poisoned"))
    }
}

/// How often a policy change is tried when other writers keep changing the policy.
const POLICY_CHANGE_ATTEMPTS: usize = 4;

/// `batch`, committed only while the store is at the policy version `snap` was loaded at.
fn expecting(snap: &PermissionSnapshot, mut batch: Vec<Mutation>) -> Vec<Mutation> {
    batch.insert(0, Mutation::ExpectPolicyVersion(snap.store_version()));
    batch
}

fn role_view(policy: &Policy, role: &Role) -> RoleView {
    RoleView {
        name: role.name.clone(),
        description: role.description.clone(),
        permissions: role.permissions.clone(),
        inherits: role.inherits.clone(),
        effective: policy.role_effective_scopes(&role.name),
        grants: role.grants.iter().map(|g| g.to_input()).collect(),
    }
}

/// Prefixes field names of a validation error with the list they belong to (bulk calls).
fn prefix_fields(e: Error, list: &str) -> Error {
    e.prefixed(list)
}
