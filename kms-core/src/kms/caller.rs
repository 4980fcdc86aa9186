//! Who a management call acts for.

use std::net::IpAddr;
use std::sync::Arc;

use crate::api_key::cache::CachedKey;
use crate::api_key::{IpNetwork, RateLimit};
use crate::application::SYSTEM_APP_ID;
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::policy::snapshot::{EffectiveSet, PermissionSnapshot};

/// Longest request id kept in audit events, in characters.
const MAX_REQUEST_ID_CHARS: usize = 128;

/// The authenticated principal of a management call: a token, or the local operator.
#[derive(Debug, Clone)]
pub struct Caller {
    ip: Option<IpAddr>,
    request_id: Option<String>,
    /// The verified key; `None` for the operator, who holds everything.
    key: Option<Arc<CachedKey>>,
}

impl Caller {
    pub(crate) fn operator() -> Self {
        Caller {
            ip: None,
            request_id: None,
            key: None,
        }
    }

    pub(crate) fn for_key(key: Arc<CachedKey>) -> Self {
        Caller {
            ip: None,
            request_id: None,
            key: Some(key),
        }
    }

    /// The same caller, with the client address and request id recorded in audit events.
    pub fn with_request(mut self, ip: Option<IpAddr>, request_id: Option<String>) -> Self {
        self.ip = ip;
        self.request_id = request_id.map(|r| {
            r.chars()
                .filter(|c| !c.is_control())
                .take(MAX_REQUEST_ID_CHARS)
                .collect()
        });
        self
    }

    /// Who the audit log names: the token id, the user of a session, or `operator`.
    pub fn actor(&self) -> &str {
        match self.key.as_ref().and_then(|k| k.session.as_ref()) {
            Some(s) => &s.user_id,
            None => self.token_id().unwrap_or("operator"),
        }
    }

    /// For a user's session: the session's id.
    pub fn session_id(&self) -> Option<&str> {
        self.key
            .as_ref()
            .filter(|k| k.session.is_some())
            .map(|k| k.record.id.as_str())
    }

    /// For a user's session: the user's id.
    pub fn user_id(&self) -> Option<&str> {
        self.key
            .as_ref()
            .and_then(|k| k.session.as_ref())
            .map(|s| s.user_id.as_str())
    }

    /// The client address, when known.
    pub fn ip(&self) -> Option<IpAddr> {
        self.ip
    }

    /// The request id, when known.
    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }

    /// The id of the caller's token; `None` for the local operator.
    pub fn token_id(&self) -> Option<&str> {
        self.key.as_ref().map(|k| k.record.id.as_str())
    }

    /// The caller's application.
    pub fn app_id(&self) -> &str {
        self.key
            .as_ref()
            .map_or(SYSTEM_APP_ID, |k| k.record.app_id.as_str())
    }

    /// Whether the caller's application requires signed management calls (as of the
    /// caller's authentication). Answered without the store.
    pub fn requires_signed_requests(&self) -> bool {
        self.key
            .as_ref()
            .is_some_and(|k| k.app.security.require_signed_requests)
    }

    pub(crate) fn key(&self) -> Option<&Arc<CachedKey>> {
        self.key.as_ref()
    }

    pub(crate) fn app(&self) -> Option<&Arc<crate::application::Application>> {
        self.key.as_ref().map(|k| &k.app)
    }

    /// Whether the caller belongs to the system application and so may see every
    /// application.
    pub fn is_system(&self) -> bool {
        self.app_id() == SYSTEM_APP_ID
    }

    /// Whether objects of `app_id` are visible to the caller.
    pub(crate) fn sees_app(&self, app_id: &str) -> bool {
        self.is_system() || self.app_id() == app_id
    }

    /// The caller's effective set in `snap`, recompiled if the policy changed since the
    /// caller was authenticated. `None` means the operator, who holds everything.
    pub(crate) fn effective_in(&self, snap: &PermissionSnapshot) -> Option<Arc<EffectiveSet>> {
        let key = self.key.as_ref()?;
        if key.effective.generation() == snap.generation() {
            Some(Arc::clone(&key.effective))
        } else {
            Some(Arc::new(snap.effective(
                key.record.scopes.iter(),
                key.record.roles.iter(),
            )))
        }
    }

    /// Fails with `Forbidden` unless the caller holds `scope`.
    pub(crate) fn require(&self, snap: &PermissionSnapshot, scope: &str) -> Result<()> {
        match self.effective_in(snap) {
            None => Ok(()),
            Some(e) if snap.check(&e, scope) => Ok(()),
            Some(_) => Err(Error::Forbidden {
                required: scope.to_owned(),
            }),
        }
    }

    /// Fails unless the caller may change global definitions (permissions, roles,
    /// applications): only the system application may, besides holding `scope`.
    pub(crate) fn require_global(&self, snap: &PermissionSnapshot, scope: &str) -> Result<()> {
        self.require(snap, scope)?;
        if self.is_system() {
            Ok(())
        } else {
            Err(Error::Forbidden {
                required: scope.to_owned(),
            })
        }
    }

    /// Fails with `Forbidden` naming the first scope of `wanted` the caller does not hold.
    pub(crate) fn require_superset(
        &self,
        snap: &PermissionSnapshot,
        wanted: &EffectiveSet,
    ) -> Result<()> {
        let Some(mine) = self.effective_in(snap) else {
            return Ok(());
        };
        if snap.is_subset(wanted, &mine) {
            return Ok(());
        }
        let missing = if wanted.is_admin() {
            crate::policy::scope::ADMIN.to_owned()
        } else {
            snap.scopes_of(wanted)
                .into_iter()
                .find(|s| !snap.check(&mine, s.as_str()))
                .map(|s| s.to_string())
                .unwrap_or_else(|| crate::policy::scope::ADMIN.to_owned())
        };
        Err(Error::Forbidden { required: missing })
    }
}

/// The limits a token is about to get; `None` for a limit left as it is.
#[derive(Default)]
pub(crate) struct ProposedLimits<'a> {
    pub(crate) expires_at: Option<Option<Timestamp>>,
    pub(crate) uses: Option<Option<u64>>,
    pub(crate) ratelimit: Option<Option<RateLimit>>,
    pub(crate) ip_allow: Option<&'a [IpNetwork]>,
}

impl Caller {
    /// The caller's own expiry, if it has one (the operator has none). A session's end
    /// is the end of a login, not a limit on the user's authority: none.
    pub(crate) fn expires_at(&self) -> Option<Timestamp> {
        self.key
            .as_ref()
            .filter(|k| k.session.is_none())
            .and_then(|k| k.record.expires_at)
    }

    /// Whether the caller is a key with a use limit (then its current count is needed).
    pub(crate) fn has_use_limit(&self) -> bool {
        self.key
            .as_ref()
            .is_some_and(|k| k.record.limits.uses.is_some())
    }

    /// The no-escalation rule for limits and lifetime: fails with
    /// [`Error::LooserLimit`] unless every proposed limit is at least as tight as the
    /// caller's own, so a restricted key cannot shed its restrictions, on itself or through
    /// a token it creates, rotates or changes. `own_uses` is the caller's uses left now
    /// (read from the store; the cached record's count is not kept current).
    pub(crate) fn require_no_looser(
        &self,
        own_uses: Option<u64>,
        proposed: &ProposedLimits<'_>,
    ) -> Result<()> {
        let Some(key) = &self.key else {
            return Ok(());
        };
        let own = &key.record.limits;
        let looser = |limit: &'static str, own: String| Err(Error::LooserLimit { limit, own });
        if let (Some(mine), Some(wanted)) = (self.expires_at(), proposed.expires_at) {
            if wanted.is_none_or(|w| w > mine) {
                return looser("expires_at", format!("expires at {}", mine.to_rfc3339()));
            }
        }
        if let (Some(mine), Some(wanted)) = (own_uses, proposed.uses) {
            if wanted.is_none_or(|w| w > mine) {
                return looser("uses", format!("{mine} uses left"));
            }
        }
        if let (Some(mine), Some(wanted)) = (own.ratelimit, proposed.ratelimit) {
            let faster = wanted.is_none_or(|w| {
                w.limit > mine.limit
                    || u64::from(w.limit) * u64::from(mine.per_seconds)
                        > u64::from(mine.limit) * u64::from(w.per_seconds)
            });
            if faster {
                return looser(
                    "ratelimit",
                    format!("{} per {} s", mine.limit, mine.per_seconds),
                );
            }
        }
        if let (false, Some(wanted)) = (own.ip_allow.is_empty(), proposed.ip_allow) {
            let wider = wanted.is_empty()
                || wanted
                    .iter()
                    .any(|w| !own.ip_allow.iter().any(|n| w.is_within(n)));
            if wider {
                let nets: Vec<String> = own.ip_allow.iter().map(ToString::to_string).collect();
                return looser("ip_allow", format!("from {}", nets.join(", ")));
            }
        }
        Ok(())
    }
}
