//! Permissions and roles: scopes and role names, the definitions and their consistency
//! rules, permission queries, and the compiled snapshot every check runs against.

pub(crate) mod condition;
pub(crate) mod definitions;
pub(crate) mod grant;
pub(crate) mod query;
pub(crate) mod scope;
pub(crate) mod snapshot;

pub use condition::{Condition, ConditionError, ConditionInput, ConditionLimits};
pub(crate) use definitions::default_permissions;
pub use definitions::{Permission, Policy, Role};
pub use grant::{ConditionalGrant, GrantInput, GrantTarget};
pub use query::PermissionQuery;
pub use scope::{RoleName, Scope, ADMIN};
pub use snapshot::{EffectiveSet, PermissionSnapshot};
