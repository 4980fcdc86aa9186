//! API keys: create, read, list, change, revoke, rotate, delete.

use super::audit_log::Audit;
use super::caller::ProposedLimits;
use super::{Caller, Kms};
use crate::api_key::{CreatedToken, TokenInfo, TokenLimits, TokenStatus};
use crate::application::Application;
use crate::clock::Timestamp;
use crate::error::{Error, FieldErrors, Result};
use crate::page::{Page, PageRequest};
use crate::policy::scope::{shown, RoleName, Scope};
use crate::requests::{
    validate_expiry, validate_metadata, validate_name, validate_networks, validate_ratelimit,
    validate_roles, validate_scopes, validate_uses, NewToken, RotateToken, TokenUpdate,
    MAX_LIFETIME_SECS,
};
use crate::store::Mutation;
use crate::store::TokenRecord;
use crate::token_format;

/// Everything a new token is made of, validated.
pub(crate) struct TokenSpec {
    pub(crate) name: String,
    pub(crate) scopes: Vec<Scope>,
    pub(crate) roles: Vec<RoleName>,
    pub(crate) grants: Vec<crate::policy::ConditionalGrant>,
    pub(crate) expires_at: Option<Timestamp>,
    pub(crate) metadata: serde_json::Map<String, serde_json::Value>,
    pub(crate) limits: TokenLimits,
    pub(crate) rotated_from: Option<String>,
}

/// Everything a token's grants can ever give: its scopes and roles, and the targets of its
/// conditional grants as if every condition held.
pub(crate) fn reach(
    snap: &crate::policy::snapshot::PermissionSnapshot,
    scopes: &[Scope],
    roles: &[RoleName],
    grants: &[crate::policy::ConditionalGrant],
) -> crate::policy::snapshot::EffectiveSet {
    use crate::policy::GrantTarget;
    let mut all_scopes = scopes.to_vec();
    let mut all_roles = roles.to_vec();
    for g in grants {
        match &g.target {
            GrantTarget::Scope(s) => all_scopes.push(s.clone()),
            GrantTarget::Role(r) => all_roles.push(r.clone()),
        }
    }
    snap.effective(all_scopes.iter(), all_roles.iter())
}

/// Most tokens one bulk call creates or revokes.
pub(crate) const MAX_BULK: usize = 1000;

impl Kms {
    /// Validates the `grants` of a request: each names exactly one known scope or role;
    /// one without `when` joins `scopes` or `roles`, one with it becomes a conditional
    /// grant (its condition parsed under the configured limits; errors name the position).
    pub(crate) fn validate_grants(
        &self,
        errs: &mut FieldErrors,
        snap: &crate::policy::snapshot::PermissionSnapshot,
        raw: &[crate::policy::GrantInput],
        scopes: &mut Vec<Scope>,
        roles: &mut Vec<RoleName>,
    ) -> Vec<crate::policy::ConditionalGrant> {
        use crate::policy::{Condition, ConditionalGrant, GrantTarget};
        let mut out = Vec::new();
        if raw.len() > crate::requests::MAX_GRANTS {
            errs.push(
                "grants",
                format!("must list at most {} entries", crate::requests::MAX_GRANTS),
            );
            return out;
        }
        for (i, g) in raw.iter().enumerate() {
            let field = format!("grants[{i}]");
            let target = match (&g.scope, &g.role) {
                (Some(s), None) => match Scope::parse(s) {
                    Ok(s) if snap.policy().permissions.contains_key(&s) => GrantTarget::Scope(s),
                    Ok(s) => {
                        errs.push(format!("{field}.scope"), format!("unknown permission {s}"));
                        continue;
                    }
                    Err(e) => {
                        errs.push(format!("{field}.scope"), e.to_string());
                        continue;
                    }
                },
                (None, Some(r)) => match RoleName::parse(r) {
                    Ok(r) if snap.policy().roles.contains_key(&r) => GrantTarget::Role(r),
                    Ok(r) => {
                        errs.push(format!("{field}.role"), format!("unknown role {r}"));
                        continue;
                    }
                    Err(e) => {
                        errs.push(format!("{field}.role"), e.to_string());
                        continue;
                    }
                },
                _ => {
                    errs.push(field, "give exactly one of scope and role");
                    continue;
                }
            };
            let Some(when) = &g.when else {
                match target {
                    GrantTarget::Scope(s) if !scopes.contains(&s) => scopes.push(s),
                    GrantTarget::Role(r) if !roles.contains(&r) => roles.push(r),
                    _ => {}
                }
                continue;
            };
            match Condition::parse(when, &self.inner.condition_limits) {
                Ok(c) => out.push(ConditionalGrant {
                    target,
                    when: std::sync::Arc::new(c),
                }),
                Err(e) => errs.push(format!("{field}.when"), e.to_string()),
            }
        }
        out
    }

    /// Creates a token in `app_id` (`token.create`). The caller must hold every scope and
    /// role it grants. The plaintext is in the result and nowhere else, ever.
    pub fn create_token(
        &self,
        caller: &Caller,
        app_id: &str,
        req: NewToken,
    ) -> Result<CreatedToken> {
        let snap = self.snapshot()?;
        caller.require(&snap, "token.create")?;
        let app = self.visible_app(caller, app_id)?;
        refuse_if_disabled(&app)?;
        let spec = self.token_spec(caller, &snap, req)?;
        self.insert_new_token(caller, &app, spec, "token.create", |_| Vec::new())
    }

    /// Creates up to 1,000 tokens in `app_id` at once (`token.create`), all or
    /// nothing: one transaction and one audit event (`token.bulk_create`, naming every
    /// id). Each request is checked as [`create_token`](Self::create_token) checks it;
    /// errors name the request (`tokens[3].scopes[0]`). The plaintexts are in the result
    /// and nowhere else.
    pub fn create_tokens(
        &self,
        caller: &Caller,
        app_id: &str,
        reqs: Vec<NewToken>,
    ) -> Result<Vec<CreatedToken>> {
        let snap = self.snapshot()?;
        caller.require(&snap, "token.create")?;
        let app = self.visible_app(caller, app_id)?;
        refuse_if_disabled(&app)?;
        if reqs.is_empty() || reqs.len() > MAX_BULK {
            return Err(Error::invalid(
                "tokens",
                format!("must list from 1 to {MAX_BULK} tokens"),
            ));
        }
        let mut specs = Vec::with_capacity(reqs.len());
        for (i, req) in reqs.into_iter().enumerate() {
            specs.push(
                self.token_spec(caller, &snap, req)
                    .map_err(|e| e.prefixed(&format!("tokens[{i}]")))?,
            );
        }
        for _ in 0..3 {
            let mut made = Vec::with_capacity(specs.len());
            for spec in &specs {
                made.push(self.new_token_record(&app, spec)?);
            }
            let ids: Vec<&str> = made.iter().map(|(r, _)| r.id.as_str()).collect();
            let audit = Audit::success("token.bulk_create", app.id.clone())
                .app(app.id.clone())
                .details(serde_json::json!({"count": ids.len(), "ids": ids}));
            let batch = made
                .iter()
                .map(|(r, _)| Mutation::InsertToken(r.clone()))
                .collect();
            match self.commit(Some(caller), audit, batch) {
                Ok(()) => {
                    let now = self.inner.clock.now();
                    return Ok(made
                        .into_iter()
                        .map(|(record, token)| CreatedToken {
                            token,
                            info: TokenInfo::from_record(&record, now),
                        })
                        .collect());
                }
                Err(Error::Conflict(_)) => continue, // an id collision: make new ones
                Err(e) => return Err(e),
            }
        }
        Err(Error::internal("could not allocate unique token ids"))
    }

    /// Revokes many tokens at once (`token.revoke`), all or nothing: those named by `ids`,
    /// or those of `filter`'s application matching it; at most 1,000. One
    /// transaction and one audit event (`token.bulk_revoke`, naming every id). Tokens
    /// already revoked are left as they are and not counted.
    pub fn revoke_tokens(
        &self,
        caller: &Caller,
        req: crate::requests::BulkRevoke,
    ) -> Result<crate::requests::BulkRevoked> {
        let snap = self.snapshot()?;
        caller.require(&snap, "token.revoke")?;
        let targets = self.bulk_targets(caller, req.ids.as_deref(), req.filter.as_ref())?;
        let now = self.inner.clock.now();
        let mut batch = Vec::new();
        let mut ids = Vec::new();
        for mut r in targets {
            if r.status == TokenStatus::Revoked {
                continue;
            }
            self.inner.cache.invalidate_token(&r.id);
            r.status = TokenStatus::Revoked;
            r.revoked_at = Some(now);
            ids.push(r.id.clone());
            batch.push(Mutation::UpdateToken(r));
        }
        if !batch.is_empty() {
            let audit = Audit::success("token.bulk_revoke", caller.app_id().to_owned())
                .app(caller.app_id().to_owned())
                .details(serde_json::json!({"count": ids.len(), "ids": ids}));
            self.commit(Some(caller), audit, batch)?;
        }
        Ok(crate::requests::BulkRevoked {
            revoked: ids.len(),
            ids,
        })
    }

    /// Grants and withdraws roles on many tokens at once (`token.create`), all or nothing:
    /// those named by `ids`, or those matching `filter`; at most 1,000. The caller
    /// must hold every role it grants and everything each changed token can reach, as for
    /// `PATCH`. One transaction and one audit event (`token.bulk_roles`).
    pub fn change_token_roles(
        &self,
        caller: &Caller,
        req: crate::requests::BulkRoles,
    ) -> Result<crate::requests::BulkChanged> {
        let snap = self.snapshot()?;
        caller.require(&snap, "token.create")?;
        let (grant, withdraw) = role_change(caller, &snap, &req.grant, &req.withdraw)?;
        let targets = self.bulk_targets(caller, req.ids.as_deref(), req.filter.as_ref())?;
        let mut batch = Vec::new();
        let mut ids = Vec::new();
        for mut r in targets {
            caller.require_superset(&snap, &reach(&snap, &r.scopes, &r.roles, &r.grants))?;
            let before = r.roles.clone();
            r.roles.retain(|role| !withdraw.contains(role));
            for role in &grant {
                if !r.roles.contains(role) {
                    r.roles.push(role.clone());
                }
            }
            if r.roles != before {
                ids.push(r.id.clone());
                batch.push(Mutation::UpdateToken(r));
            }
        }
        if !batch.is_empty() {
            let audit = Audit::success("token.bulk_roles", caller.app_id().to_owned())
                .app(caller.app_id().to_owned())
                .details(serde_json::json!({
                    "count": ids.len(), "ids": ids, "grant": grant, "withdraw": withdraw,
                }));
            self.commit(Some(caller), audit, batch)?;
        }
        Ok(crate::requests::BulkChanged {
            changed: ids.len(),
            ids,
        })
    }

    /// The tokens a bulk call names: `ids` (1 to 1,000, each visible to `caller`), or those
    /// matching `filter`; exactly one of the two.
    fn bulk_targets(
        &self,
        caller: &Caller,
        ids: Option<&[String]>,
        filter: Option<&crate::requests::TokenFilter>,
    ) -> Result<Vec<TokenRecord>> {
        match (ids, filter) {
            (Some(ids), None) => {
                if ids.is_empty() || ids.len() > MAX_BULK {
                    return Err(Error::invalid(
                        "ids",
                        format!("must list from 1 to {MAX_BULK} ids"),
                    ));
                }
                ids.iter()
                    .map(|id| self.visible_token(caller, id))
                    .collect()
            }
            (None, Some(filter)) => self.matching_tokens(caller, filter),
            _ => Err(Error::invalid(
                "ids",
                "give either ids or filter, not both and not neither",
            )),
        }
    }

    /// The tokens of `filter.app_id` (visible to `caller`) that match it; more than
    /// 1,000 is refused.
    fn matching_tokens(
        &self,
        caller: &Caller,
        filter: &crate::requests::TokenFilter,
    ) -> Result<Vec<TokenRecord>> {
        let app = self.visible_app(caller, &filter.app_id)?;
        let before = filter
            .created_before
            .as_deref()
            .map(|t| {
                Timestamp::parse_rfc3339(t).map_err(|_| {
                    Error::invalid("filter.created_before", "must be an RFC 3339 date-time")
                })
            })
            .transpose()?;
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .inner
                .store
                .list_tokens(&app.id, after.as_deref(), 500)?;
            let Some(last) = page.last().map(|r| r.id.clone()) else {
                break;
            };
            for r in page {
                let name_ok = filter
                    .name_prefix
                    .as_deref()
                    .is_none_or(|p| r.name.starts_with(p));
                let meta_ok = filter
                    .metadata
                    .as_ref()
                    .is_none_or(|m| m.iter().all(|(k, v)| r.metadata.get(k) == Some(v)));
                let time_ok = before.is_none_or(|b| r.created_at < b);
                if name_ok && meta_ok && time_ok {
                    if out.len() == MAX_BULK {
                        return Err(Error::invalid(
                            "filter",
                            format!("matches more than {MAX_BULK} tokens; narrow it"),
                        ));
                    }
                    out.push(r);
                }
            }
            after = Some(last);
        }
        Ok(out)
    }

    /// Validates a token request into what the token will be made of, with the checks
    /// every creation makes: known scopes and roles, grants, expiry, metadata, limits, and
    /// that the caller holds everything it grants and sets no looser limits than its own.
    fn token_spec(
        &self,
        caller: &Caller,
        snap: &crate::policy::snapshot::PermissionSnapshot,
        req: NewToken,
    ) -> Result<TokenSpec> {
        let now = self.inner.clock.now();
        let mut errs = FieldErrors::default();
        let name = validate_name(&mut errs, "name", &req.name);
        let mut scopes = validate_scopes(&mut errs, "scopes", &req.scopes);
        let mut roles = validate_roles(&mut errs, "roles", &req.roles);
        let grants = self.validate_grants(&mut errs, snap, &req.grants, &mut scopes, &mut roles);
        // Indexes refer to the request's lists, as given.
        for (i, s) in req.scopes.iter().enumerate() {
            if Scope::parse(s).is_ok_and(|s| !snap.policy().permissions.contains_key(&s)) {
                errs.push(format!("scopes[{i}]"), format!("unknown permission {s}"));
            }
        }
        for (i, r) in req.roles.iter().enumerate() {
            if RoleName::parse(r).is_ok_and(|r| !snap.policy().roles.contains_key(&r)) {
                errs.push(format!("roles[{i}]"), format!("unknown role {r}"));
            }
        }
        let expires_at = validate_expiry(&mut errs, now, req.expires_in, req.expires_at.as_deref());
        let metadata = validate_metadata(&mut errs, req.metadata);
        let limits = TokenLimits {
            ratelimit: req.ratelimit.and_then(|r| validate_ratelimit(&mut errs, r)),
            uses: req.uses.and_then(|u| validate_uses(&mut errs, u)),
            ip_allow: validate_networks(&mut errs, req.ip_allow.as_deref().unwrap_or_default()),
        };
        errs.finish()?;
        let Some(name) = name else {
            return Err(Error::internal("validation passed without a name"));
        };
        // A conditional grant is checked as if it always held: no caller may hand out what it
        // does not hold itself, under any condition.
        let wanted = reach(snap, &scopes, &roles, &grants);
        caller.require_superset(snap, &wanted)?;
        self.require_no_looser(
            caller,
            &ProposedLimits {
                expires_at: Some(expires_at),
                uses: Some(limits.uses),
                ratelimit: Some(limits.ratelimit),
                ip_allow: Some(&limits.ip_allow),
            },
        )?;
        let spec = TokenSpec {
            name,
            scopes,
            roles,
            grants,
            expires_at,
            metadata,
            limits,
            rotated_from: None,
        };
        Ok(spec)
    }

    /// [`Caller::require_no_looser`] with the caller's current uses left.
    fn require_no_looser(&self, caller: &Caller, proposed: &ProposedLimits<'_>) -> Result<()> {
        let own_uses = match caller.token_id() {
            // A key that vanished meanwhile has nothing left to give.
            Some(id) if caller.has_use_limit() => Some(
                self.inner
                    .store
                    .get_token(id)?
                    .and_then(|r| r.limits.uses)
                    .unwrap_or(0),
            ),
            _ => None,
        };
        caller.require_no_looser(own_uses, proposed)
    }

    /// Generates, stores and returns a token; `extra` adds mutations to the same batch
    /// (rotation links the old token). Retries on the astronomically unlikely id collision.
    fn insert_new_token(
        &self,
        caller: &Caller,
        app: &Application,
        spec: TokenSpec,
        action: &'static str,
        extra: impl Fn(&TokenRecord) -> Vec<Mutation>,
    ) -> Result<CreatedToken> {
        for _ in 0..3 {
            let (record, plaintext) = self.new_token_record(app, &spec)?;
            let mut batch = vec![Mutation::InsertToken(record.clone())];
            batch.extend(extra(&record));
            let audit = Audit::success(action, record.id.clone())
                .app(app.id.clone())
                .details(serde_json::json!({
                    "name": record.name, "scopes": record.scopes, "roles": record.roles,
                    "rotated_from": record.rotated_from, "expires_at": record.expires_at,
                }));
            match self.commit(Some(caller), audit, batch) {
                Ok(()) => {
                    return Ok(CreatedToken {
                        token: plaintext,
                        info: TokenInfo::from_record(&record, self.inner.clock.now()),
                    })
                }
                Err(Error::Conflict(_)) if self.inner.store.get_token(&record.id)?.is_some() => {
                    continue
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::internal("could not allocate a unique token id"))
    }

    /// Generates a token for `app` and its record; only the argon2id hash of the secret is
    /// in the record.
    pub(crate) fn new_token_record(
        &self,
        app: &Application,
        spec: &TokenSpec,
    ) -> Result<(TokenRecord, String)> {
        let generated = token_format::generate(&app.token_prefix, self.inner.random.as_ref())?;
        let secret_hash = self
            .inner
            .hasher
            .hash(generated.secret(), self.inner.random.as_ref())?;
        let record = TokenRecord {
            id: generated.token_id(),
            app_id: app.id.clone(),
            name: spec.name.clone(),
            secret_hash,
            start: generated
                .plaintext()
                .chars()
                .take(token_format::START_LEN)
                .collect(),
            status: TokenStatus::Active,
            created_at: self.inner.clock.now(),
            expires_at: spec.expires_at,
            revoked_at: None,
            scopes: spec.scopes.clone(),
            roles: spec.roles.clone(),
            grants: spec.grants.clone(),
            metadata: spec.metadata.clone(),
            limits: spec.limits.clone(),
            rotated_from: spec.rotated_from.clone(),
            rotated_to: None,
            last_used_at: None,
        };
        Ok((record, generated.into_plaintext()))
    }

    /// One page of an application's tokens, by id (`token.read`).
    pub fn list_tokens(
        &self,
        caller: &Caller,
        app_id: &str,
        page: PageRequest,
    ) -> Result<Page<TokenInfo>> {
        caller.require(&*self.snapshot()?, "token.read")?;
        let app = self.visible_app(caller, app_id)?;
        let now = self.inner.clock.now();
        let records = super::apps::paginate(
            &page,
            |after, limit| Ok(self.inner.store.list_tokens(&app.id, after, limit)?),
            |t| &t.id,
        )?;
        Ok(Page {
            items: records
                .items
                .iter()
                .map(|r| TokenInfo::from_record(r, now))
                .collect(),
            next_cursor: records.next_cursor,
        })
    }

    /// One token (`token.read`).
    pub fn get_token(&self, caller: &Caller, id: &str) -> Result<TokenInfo> {
        caller.require(&*self.snapshot()?, "token.read")?;
        let r = self.visible_token(caller, id)?;
        Ok(TokenInfo::from_record(&r, self.inner.clock.now()))
    }

    /// Changes a token's name, metadata or limits (`token.create`).
    pub fn update_token(&self, caller: &Caller, id: &str, req: TokenUpdate) -> Result<TokenInfo> {
        let snap = self.snapshot()?;
        caller.require(&snap, "token.create")?;
        let stored = self.visible_token(caller, id)?;
        let mut r = stored.clone();
        let sets = (
            req.uses.is_some(),
            req.ratelimit.is_some(),
            req.ip_allow.is_some(),
        );
        // Loosening a token's limits is handing out its power: only for holders of it all.
        caller.require_superset(&snap, &reach(&snap, &r.scopes, &r.roles, &r.grants))?;
        let mut errs = FieldErrors::default();
        if let Some(grants) = &req.grants {
            // Replaces the conditional grants; an entry without `when` joins the scopes or
            // roles. What the new grants reach must be the caller's too.
            r.grants = self.validate_grants(&mut errs, &snap, grants, &mut r.scopes, &mut r.roles);
        }
        if let Some(n) = req.name.as_deref() {
            if let Some(n) = validate_name(&mut errs, "name", n) {
                r.name = n;
            }
        }
        if req.metadata.is_some() {
            r.metadata = validate_metadata(&mut errs, req.metadata);
        }
        if let Some(rl) = req.ratelimit {
            r.limits.ratelimit = rl.and_then(|x| validate_ratelimit(&mut errs, x));
        }
        if let Some(u) = req.uses {
            r.limits.uses = u.and_then(|x| validate_uses(&mut errs, x));
        }
        if let Some(nets) = req.ip_allow {
            r.limits.ip_allow = validate_networks(&mut errs, nets.as_deref().unwrap_or_default());
        }
        errs.finish()?;
        if req.grants.is_some() {
            caller.require_superset(&snap, &reach(&snap, &r.scopes, &r.roles, &r.grants))?;
        }
        // A limit the caller sets (on itself or another key) is no looser than its own.
        self.require_no_looser(
            caller,
            &ProposedLimits {
                expires_at: None,
                uses: sets.0.then_some(r.limits.uses),
                ratelimit: sets.1.then_some(r.limits.ratelimit),
                ip_allow: sets.2.then_some(&r.limits.ip_allow[..]),
            },
        )?;
        let now = self.inner.clock.now();
        if r == stored {
            // Nothing changes, so nothing is written or audited.
            return Ok(TokenInfo::from_record(&r, now));
        }
        let audit = Audit::success("token.update", r.id.clone()).app(r.app_id.clone()).details(serde_json::json!({
            "name": r.name, "ratelimit": r.limits.ratelimit, "uses": r.limits.uses, "ip_allow": r.limits.ip_allow,
            "scopes": r.scopes, "roles": r.roles, "grants": r.grants,
        }));
        self.commit(Some(caller), audit, vec![Mutation::UpdateToken(r.clone())])?;
        Ok(TokenInfo::from_record(&r, now))
    }

    /// Revokes a token (`token.revoke`); idempotent. It fails verification at once, cached
    /// or not.
    pub fn revoke_token(&self, caller: &Caller, id: &str) -> Result<TokenInfo> {
        caller.require(&*self.snapshot()?, "token.revoke")?;
        let mut r = self.visible_token(caller, id)?;
        // Even when the store already says revoked (another process did it), this
        // process's cache must forget the token now.
        self.inner.cache.invalidate_token(&r.id);
        let now = self.inner.clock.now();
        if r.status != TokenStatus::Revoked {
            r.status = TokenStatus::Revoked;
            r.revoked_at = Some(now);
            let audit = Audit::success("token.revoke", r.id.clone()).app(r.app_id.clone());
            self.commit(Some(caller), audit, vec![Mutation::UpdateToken(r.clone())])?;
        }
        Ok(TokenInfo::from_record(&r, now))
    }

    /// Replaces a token with a new one holding the same grants, metadata and limits
    /// (`token.create`). The old token keeps working for `grace_seconds` (default 0), then
    /// expires. Both changes are one transaction.
    pub fn rotate_token(
        &self,
        caller: &Caller,
        id: &str,
        req: RotateToken,
    ) -> Result<CreatedToken> {
        let snap = self.snapshot()?;
        caller.require(&snap, "token.create")?;
        let old = self.visible_token(caller, id)?;
        // Rotation hands the caller a new plaintext with the old token's power.
        caller.require_superset(&snap, &reach(&snap, &old.scopes, &old.roles, &old.grants))?;
        let grace = req.grace_seconds.unwrap_or(0);
        if !(0..=MAX_LIFETIME_SECS).contains(&grace) {
            return Err(Error::invalid(
                "grace_seconds",
                format!("must be from 0 to {MAX_LIFETIME_SECS}"),
            ));
        }
        let now = self.inner.clock.now();
        if old.status == TokenStatus::Revoked || old.is_expired(now) {
            return Err(Error::Conflict(format!(
                "token {} is revoked or expired and cannot be rotated",
                old.id
            )));
        }
        if old.rotated_to.is_some() {
            return Err(Error::Conflict(format!(
                "token {} was already rotated",
                old.id
            )));
        }
        let app = self.visible_app(caller, &old.app_id)?;
        refuse_if_disabled(&app)?;
        // The new token lives as long as the old one was meant to, but never past the
        // caller's own expiry: rotating is not a way to outlive oneself.
        let lifetime = old.expires_at.map(|e| e.unix() - old.created_at.unix());
        let expires_at = match (
            lifetime.map(|l| now.plus_secs(l.max(1))),
            caller.expires_at(),
        ) {
            (Some(e), Some(mine)) => Some(e.min(mine)),
            (None, mine) => mine,
            (e, None) => e,
        };
        self.require_no_looser(
            caller,
            &ProposedLimits {
                expires_at: Some(expires_at),
                uses: Some(old.limits.uses),
                ratelimit: Some(old.limits.ratelimit),
                ip_allow: Some(&old.limits.ip_allow),
            },
        )?;
        let spec = TokenSpec {
            name: old.name.clone(),
            scopes: old.scopes.clone(),
            roles: old.roles.clone(),
            grants: old.grants.clone(),
            expires_at,
            metadata: old.metadata.clone(),
            limits: old.limits.clone(),
            rotated_from: Some(old.id.clone()),
        };
        let grace_end = now.plus_secs(grace);
        self.insert_new_token(caller, &app, spec, "token.rotate", |new| {
            let mut o = old.clone();
            o.rotated_to = Some(new.id.clone());
            o.expires_at = Some(o.expires_at.map_or(grace_end, |e| e.min(grace_end)));
            vec![Mutation::UpdateToken(o)]
        })
    }

    /// Deletes a token (`token.revoke`).
    pub fn delete_token(&self, caller: &Caller, id: &str) -> Result<()> {
        caller.require(&*self.snapshot()?, "token.revoke")?;
        let r = self.visible_token(caller, id)?;
        self.inner.cache.invalidate_token(&r.id);
        let audit = Audit::success("token.delete", r.id.clone()).app(r.app_id.clone());
        self.commit(Some(caller), audit, vec![Mutation::DeleteToken(r.id)])?;
        Ok(())
    }

    /// The token `id` if the caller may see it; `NotFound` otherwise.
    pub(crate) fn visible_token(&self, caller: &Caller, id: &str) -> Result<TokenRecord> {
        let not_found = || Error::NotFound(format!("token {} does not exist", shown(id)));
        if id.len() > 64 {
            return Err(not_found());
        }
        match self.inner.store.get_token(id)? {
            Some(r) if caller.sees_app(&r.app_id) => Ok(r),
            _ => Err(not_found()),
        }
    }
}

/// A disabled application's tokens fail verification; minting new ones there would hand
/// out keys that cannot work, or that start working unnoticed when it is enabled again.
fn refuse_if_disabled(app: &Application) -> Result<()> {
    if app.status == crate::application::AppStatus::Disabled {
        return Err(Error::Conflict(format!(
            "application {} is disabled; enable it before creating or rotating its tokens",
            app.id
        )));
    }
    Ok(())
}

/// The roles a bulk role change grants and withdraws, validated (each known, at least one
/// given) and checked for escalation (the caller holds every role it grants).
pub(crate) fn role_change(
    caller: &Caller,
    snap: &crate::policy::snapshot::PermissionSnapshot,
    grant: &[String],
    withdraw: &[String],
) -> Result<(Vec<RoleName>, Vec<RoleName>)> {
    let mut errs = FieldErrors::default();
    let grant = validate_roles(&mut errs, "grant", grant);
    let withdraw = validate_roles(&mut errs, "withdraw", withdraw);
    for (field, list) in [("grant", &grant), ("withdraw", &withdraw)] {
        for (i, r) in list.iter().enumerate() {
            if !snap.policy().roles.contains_key(r) {
                errs.push(format!("{field}[{i}]"), format!("unknown role {r}"));
            }
        }
    }
    if grant.is_empty() && withdraw.is_empty() {
        errs.push("grant", "give roles to grant or to withdraw");
    }
    errs.finish()?;
    caller.require_superset(snap, &snap.effective([], grant.iter()))?;
    Ok((grant, withdraw))
}
