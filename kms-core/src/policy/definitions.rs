//! Permission and role definitions, and the rules that keep them consistent: every
//! reference resolves, and neither the implication graph nor role inheritance has a cycle.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::policy::scope::{RoleName, Scope, ADMIN};

/// A defined permission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    /// The scope it defines.
    pub scope: Scope,
    /// What it allows, for people.
    #[serde(default)]
    pub description: String,
    /// Scopes that holding this one also grants.
    #[serde(default)]
    pub implies: Vec<Scope>,
}

/// A named set of permissions that may inherit other roles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// The role's name.
    pub name: RoleName,
    /// What it is for, for people.
    #[serde(default)]
    pub description: String,
    /// Scopes granted directly.
    #[serde(default)]
    pub permissions: Vec<Scope>,
    /// Roles whose permissions this one also grants.
    #[serde(default)]
    pub inherits: Vec<RoleName>,
    /// Scopes the role grants only while a condition holds (each a scope grant).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<crate::policy::ConditionalGrant>,
}

/// Every permission and role definition, as stored: the input the compiled permission
/// snapshot is built from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Permissions by scope.
    pub permissions: BTreeMap<Scope, Permission>,
    /// Roles by name.
    pub roles: BTreeMap<RoleName, Role>,
}

/// The permissions seeded at initialisation: `admin`, then `X.read`/`X.write` pairs where
/// every `X.write` implies `X.read`, and the remaining operational scopes.
pub(crate) fn default_permissions() -> Vec<Permission> {
    let p = |scope: &str, description: &str, implies: &[&str]| Permission {
        scope: Scope::known(scope),
        description: description.to_owned(),
        implies: implies.iter().map(|s| Scope::known(s)).collect(),
    };
    vec![
        p(ADMIN, "every permission", &[]),
        p("app.read", "read applications", &[]),
        p(
            "app.write",
            "create, change and delete applications",
            &["app.read"],
        ),
        p("token.read", "read tokens", &[]),
        p("token.create", "create and rotate tokens", &[]),
        p("token.revoke", "revoke and delete tokens", &[]),
        p("token.verify", "verify tokens", &[]),
        p("permission.read", "read permissions", &[]),
        p(
            "permission.write",
            "define and delete permissions",
            &["permission.read"],
        ),
        p("role.read", "read roles", &[]),
        p(
            "role.write",
            "define, change and delete roles",
            &["role.read"],
        ),
        p("audit.read", "read the audit log", &[]),
        p("key.read", "read signing keys", &[]),
        p("key.rotate", "rotate signing keys", &[]),
        p("user.read", "read users", &[]),
        p(
            "user.write",
            "change, disable and delete users",
            &["user.read"],
        ),
        p("idp.read", "read identity-provider connections", &[]),
        p(
            "idp.write",
            "create, change and delete identity-provider connections",
            &["idp.read"],
        ),
        p("session.read", "read users' sessions", &[]),
        p("session.revoke", "end users' sessions", &[]),
    ]
}

impl Policy {
    /// The policy holding `permissions` and `roles` (as a store reads them, in any order).
    pub fn from_definitions(
        permissions: impl IntoIterator<Item = Permission>,
        roles: impl IntoIterator<Item = Role>,
    ) -> Self {
        Policy {
            permissions: permissions
                .into_iter()
                .map(|p| (p.scope.clone(), p))
                .collect(),
            roles: roles.into_iter().map(|r| (r.name.clone(), r)).collect(),
        }
    }

    /// Checks that every reference resolves and that there are no cycles. The error names
    /// the offending field and, for a cycle, the cycle itself (`a -> b -> a`).
    pub fn validate(&self) -> Result<()> {
        for perm in self.permissions.values() {
            for (i, target) in perm.implies.iter().enumerate() {
                if !self.permissions.contains_key(target) {
                    return Err(Error::invalid(
                        format!("implies[{i}]"),
                        format!("unknown permission {target}"),
                    ));
                }
            }
        }
        for role in self.roles.values() {
            for (i, g) in role.grants.iter().enumerate() {
                match &g.target {
                    crate::policy::GrantTarget::Scope(s) if self.permissions.contains_key(s) => {}
                    crate::policy::GrantTarget::Scope(s) => {
                        return Err(Error::invalid(
                            format!("grants[{i}].scope"),
                            format!("unknown permission {s}"),
                        ))
                    }
                    crate::policy::GrantTarget::Role(_) => {
                        return Err(Error::invalid(
                            format!("grants[{i}].role"),
                            "a role's grants name scopes; roles are inherited with `inherits`",
                        ))
                    }
                }
            }
            for (i, s) in role.permissions.iter().enumerate() {
                if !self.permissions.contains_key(s) {
                    return Err(Error::invalid(
                        format!("permissions[{i}]"),
                        format!("unknown permission {s}"),
                    ));
                }
            }
            for (i, r) in role.inherits.iter().enumerate() {
                if !self.roles.contains_key(r) {
                    return Err(Error::invalid(
                        format!("inherits[{i}]"),
                        format!("unknown role {r}"),
                    ));
                }
            }
        }
        if let Some(cycle) = find_cycle(self.permissions.keys(), |s| {
            self.permissions
                .get(s)
                .map(|p| p.implies.as_slice())
                .unwrap_or(&[])
        }) {
            return Err(Error::invalid(
                "implies",
                format!("implies edges would form a cycle: {}", join_cycle(&cycle)),
            ));
        }
        if let Some(cycle) = find_cycle(self.roles.keys(), |r| {
            self.roles
                .get(r)
                .map(|x| x.inherits.as_slice())
                .unwrap_or(&[])
        }) {
            return Err(Error::invalid(
                "inherits",
                format!(
                    "role inheritance would form a cycle: {}",
                    join_cycle(&cycle)
                ),
            ));
        }
        Ok(())
    }

    /// The scopes a role grants, through inheritance and implication, sorted. Hierarchy
    /// descendants among defined permissions are included.
    pub fn role_effective_scopes(&self, role: &RoleName) -> Vec<Scope> {
        let mut scopes = BTreeSet::new();
        let mut seen = BTreeSet::new();
        let mut stack = vec![role];
        while let Some(r) = stack.pop() {
            if !seen.insert(r) {
                continue;
            }
            if let Some(def) = self.roles.get(r) {
                scopes.extend(def.permissions.iter().cloned());
                stack.extend(def.inherits.iter());
            }
        }
        self.expand(scopes)
    }

    /// Closes a set of scopes under implication and the hierarchy (defined permissions
    /// only). Holding `admin` expands to every defined permission.
    pub fn expand(&self, start: BTreeSet<Scope>) -> Vec<Scope> {
        if start.iter().any(|s| s.as_str() == ADMIN) {
            return self.permissions.keys().cloned().collect();
        }
        let mut held = BTreeSet::new();
        let mut stack: Vec<Scope> = start.into_iter().collect();
        while let Some(s) = stack.pop() {
            if !held.insert(s.clone()) {
                continue;
            }
            if s.as_str() == ADMIN {
                return self.permissions.keys().cloned().collect();
            }
            if let Some(p) = self.permissions.get(&s) {
                stack.extend(p.implies.iter().cloned());
            }
            let below = self
                .permissions
                .range(s.clone()..)
                .skip_while(|(k, _)| *k == &s)
                .take_while(|(k, _)| k.as_str().starts_with(s.as_str()))
                .filter(|(k, _)| s.covers(k.as_str()))
                .map(|(k, _)| k.clone());
            stack.extend(below);
        }
        held.into_iter().collect()
    }
}

/// Finds a cycle in a directed graph given by `edges`, returning its nodes with the first
/// repeated at the end.
fn find_cycle<'a, T: Ord + Clone + 'a>(
    nodes: impl Iterator<Item = &'a T>,
    edges: impl Fn(&T) -> &'a [T],
) -> Option<Vec<T>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    let mut marks: BTreeMap<T, Mark> = BTreeMap::new();
    for root in nodes {
        if marks.contains_key(root) {
            continue;
        }
        // Iterative DFS: (node, next edge index), with the current path on the stack.
        let mut stack: Vec<(T, usize)> = vec![(root.clone(), 0)];
        marks.insert(root.clone(), Mark::Visiting);
        while let Some((node, idx)) = stack.last().cloned() {
            let out = edges(&node);
            if idx < out.len() {
                if let Some(top) = stack.last_mut() {
                    top.1 += 1;
                }
                let next = &out[idx];
                match marks.get(next) {
                    Some(Mark::Visiting) => {
                        let start = stack.iter().position(|(n, _)| n == next).unwrap_or(0);
                        let mut cycle: Vec<T> =
                            stack[start..].iter().map(|(n, _)| n.clone()).collect();
                        cycle.push(next.clone());
                        return Some(cycle);
                    }
                    Some(Mark::Done) => {}
                    None => {
                        marks.insert(next.clone(), Mark::Visiting);
                        stack.push((next.clone(), 0));
                    }
                }
            } else {
                marks.insert(node, Mark::Done);
                stack.pop();
            }
        }
    }
    None
}

fn join_cycle<T: std::fmt::Display>(cycle: &[T]) -> String {
    cycle
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(" -> ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(scope: &str, implies: &[&str]) -> Permission {
        Permission {
            scope: Scope::parse(scope).unwrap(),
            description: String::new(),
            implies: implies.iter().map(|s| Scope::parse(s).unwrap()).collect(),
        }
    }

    fn role(name: &str, perms: &[&str], inherits: &[&str]) -> Role {
        Role {
            grants: Vec::new(),
            name: RoleName::parse(name).unwrap(),
            description: String::new(),
            permissions: perms.iter().map(|s| Scope::parse(s).unwrap()).collect(),
            inherits: inherits
                .iter()
                .map(|s| RoleName::parse(s).unwrap())
                .collect(),
        }
    }

    fn policy(perms: Vec<Permission>, roles: Vec<Role>) -> Policy {
        Policy {
            permissions: perms.into_iter().map(|p| (p.scope.clone(), p)).collect(),
            roles: roles.into_iter().map(|r| (r.name.clone(), r)).collect(),
        }
    }

    #[test]
    fn default_hierarchy_is_valid() {
        let p = policy(default_permissions(), vec![]);
        p.validate().unwrap();
        assert_eq!(p.permissions.len(), 20);
        for perm in p.permissions.values() {
            assert!(crate::policy::scope::is_valid_scope(perm.scope.as_str()));
        }
    }

    #[test]
    fn implication_cycle_is_named() {
        let p = policy(
            vec![perm("a", &["b"]), perm("b", &["c"]), perm("c", &["a"])],
            vec![],
        );
        let err = p.validate().unwrap_err().to_string();
        assert!(err.contains("a -> b -> c -> a"), "{err}");
    }

    #[test]
    fn role_cycle_is_named() {
        let p = policy(
            vec![perm("x", &[])],
            vec![role("a", &["x"], &["b"]), role("b", &[], &["a"])],
        );
        let err = p.validate().unwrap_err().to_string();
        assert!(err.contains("a -> b -> a"), "{err}");
    }

    #[test]
    fn unknown_references_are_rejected() {
        assert!(policy(vec![perm("a", &["zz"])], vec![]).validate().is_err());
        assert!(policy(vec![], vec![role("r", &["zz"], &[])])
            .validate()
            .is_err());
        assert!(policy(vec![], vec![role("r", &[], &["q"])])
            .validate()
            .is_err());
    }

    #[test]
    fn role_effective_includes_inherited_implied_and_descendants() {
        let p = policy(
            vec![
                perm("billing", &[]),
                perm("billing.read", &[]),
                perm("billing.write", &["billing.read"]),
                perm("app.read", &[]),
                perm("app.write", &["app.read"]),
            ],
            vec![
                role("viewer", &["app.write"], &[]),
                role("support", &["billing"], &["viewer"]),
            ],
        );
        let eff: Vec<String> = p
            .role_effective_scopes(&RoleName::parse("support").unwrap())
            .into_iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            eff,
            [
                "app.read",
                "app.write",
                "billing",
                "billing.read",
                "billing.write"
            ]
        );
    }
}
