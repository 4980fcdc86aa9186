//! Grants with a condition: a scope or role that a token holds only while its condition
//! holds for the request (see [`Condition`](crate::Condition)).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::policy::condition::{Condition, ConditionLimits};
use crate::policy::scope::{RoleName, Scope};

/// What a conditional grant gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantTarget {
    /// A scope (with everything it covers and implies).
    Scope(Scope),
    /// A role (with everything it grants).
    Role(RoleName),
}

/// A scope or role held only while `when` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionalGrant {
    /// The scope or role.
    pub target: GrantTarget,
    /// The condition.
    pub when: Arc<Condition>,
}

/// The wire and stored form: `{"scope": "...", "when": "..."}` or
/// `{"role": "...", "when": "..."}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantInput {
    /// A scope (give this or `role`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// A role (give this or `scope`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The condition; absent: the grant always holds, as if listed in `scopes`/`roles`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
}

impl ConditionalGrant {
    /// The wire form.
    pub fn to_input(&self) -> GrantInput {
        let (scope, role) = match &self.target {
            GrantTarget::Scope(s) => (Some(s.as_str().to_owned()), None),
            GrantTarget::Role(r) => (None, Some(r.as_str().to_owned())),
        };
        GrantInput {
            scope,
            role,
            when: Some(self.when.as_str().to_owned()),
        }
    }
}

/// Limits for conditions read back from a store: they were checked against the
/// configured limits when written, so reading only guards against a corrupt row.
pub(crate) const STORED_CONDITION_LIMITS: ConditionLimits = ConditionLimits {
    max_length: 1 << 16,
    max_depth: 256,
    max_list: 1 << 14,
};

impl Serialize for ConditionalGrant {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_input().serialize(s)
    }
}

impl<'de> Deserialize<'de> for ConditionalGrant {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let input = GrantInput::deserialize(d)?;
        let target = match (input.scope, input.role) {
            (Some(s), None) => GrantTarget::Scope(Scope::parse(&s).map_err(D::Error::custom)?),
            (None, Some(r)) => GrantTarget::Role(RoleName::parse(&r).map_err(D::Error::custom)?),
            _ => return Err(D::Error::custom("a grant names exactly one scope or role")),
        };
        let when = input
            .when
            .ok_or_else(|| D::Error::custom("a stored conditional grant has no condition"))?;
        let when = Condition::parse(&when, &STORED_CONDITION_LIMITS).map_err(D::Error::custom)?;
        Ok(ConditionalGrant {
            target,
            when: Arc::new(when),
        })
    }
}
