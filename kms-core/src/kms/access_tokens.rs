//! Access tokens: issue (API key or refresh token), validate, introspect, revoke. The
//! signing keys they are signed with are in `signing_keys`.

use base64::Engine;
use jsonwebtoken::{Algorithm, Header};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use super::audit_log::Audit;
use super::verify::Purpose;
use super::{Caller, Kms, VerifyCode};
use crate::access_token::{AccessClaims, Introspection, JwtError, OAuthError, TokenResponse};
use crate::api_key::token_format::{push_base62, push_base62_from};
use crate::api_key::TokenStatus;
use crate::application::AppStatus;
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::policy::scope::Scope;
use crate::policy::snapshot::{EffectiveSet, PermissionSnapshot};
use crate::store::Mutation;
use crate::store::{RefreshRecord, RefreshStatus, Revocation};

const REFRESH_PREFIX: &str = "kmsrt_";
const REFRESH_ID_LEN: usize = 16;
const REFRESH_SECRET_LEN: usize = 32;
const TYP: &str = "at+jwt";
/// Longest audience a client may ask for.
const MAX_AUDIENCE_LEN: usize = 256;
/// Longest access token validation looks at; anything longer is malformed.
const MAX_JWT_LEN: usize = 8192;

/// A parsed refresh token: lookup id and secret.
struct RefreshParts<'a> {
    id: &'a str,
    secret: &'a str,
}

fn parse_refresh(token: &str) -> Option<RefreshParts<'_>> {
    let rest = token.strip_prefix(REFRESH_PREFIX)?;
    if rest.len() != REFRESH_ID_LEN + REFRESH_SECRET_LEN
        || !rest.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return None;
    }
    Some(RefreshParts {
        id: &rest[..REFRESH_ID_LEN],
        secret: &rest[REFRESH_ID_LEN..],
    })
}

const REUSED: &str = "the refresh token was already used; its family has been revoked";

/// What a refresh record grants, for [`refresh_record`].
struct RefreshGrant<'a> {
    family_id: &'a str,
    token_id: &'a str,
    app_id: &'a str,
    scope: &'a str,
    audience: &'a str,
    expires_at: Timestamp,
}

/// The stored form of refresh token `token`: its lookup id and only the SHA-256 of its
/// secret.
fn refresh_record(token: &str, grant: RefreshGrant<'_>, now: Timestamp) -> Result<RefreshRecord> {
    let parts = parse_refresh(token)
        .ok_or_else(|| Error::internal("a generated refresh token does not parse"))?;
    Ok(RefreshRecord {
        id: parts.id.to_owned(),
        family_id: grant.family_id.to_owned(),
        token_id: grant.token_id.to_owned(),
        app_id: grant.app_id.to_owned(),
        secret_hash: sha256_hex(parts.secret),
        scope: grant.scope.to_owned(),
        audience: grant.audience.to_owned(),
        status: RefreshStatus::Active,
        created_at: now,
        expires_at: grant.expires_at,
        spent_at: None,
    })
}

/// The scope a refresh grants: `requested` (all of the family's `ceiling` when absent),
/// which may only narrow the ceiling, keeping what `set` holds now under `snap`.
fn refreshed_scope(
    snap: &PermissionSnapshot,
    set: &EffectiveSet,
    ceiling: &str,
    requested: Option<&str>,
) -> std::result::Result<String, OAuthError> {
    let have: Vec<&str> = ceiling.split_whitespace().collect();
    let asked: Vec<&str> = match requested.map(str::trim).filter(|s| !s.is_empty()) {
        None => have,
        Some(r) => {
            let mut out = Vec::new();
            for s in r.split_whitespace() {
                if !have.contains(&s) {
                    return Err(OAuthError::InvalidScope(format!(
                        "the scope {} was not granted to this refresh token",
                        crate::policy::scope::shown(s)
                    )));
                }
                if !out.contains(&s) {
                    out.push(s);
                }
            }
            out
        }
    };
    Ok(asked
        .into_iter()
        .filter(|s| snap.holds_defined(set, s))
        .collect::<Vec<_>>()
        .join(" "))
}

fn sha256_hex(s: &str) -> String {
    crate::hex::encode(&Sha256::digest(s.as_bytes()))
}

impl Kms {
    /// `grant_type=api_key`: exchanges an API key for an access token and a refresh token.
    /// `scope` (space-separated) may narrow the key's scopes, never widen them. The key is
    /// checked as a verification checks it, from `ip`: status, its and its application's
    /// network allow-lists, rate limit; an exchange spends one use, last.
    pub fn issue_access_token(
        &self,
        api_key: &str,
        scope: Option<&str>,
        audience: Option<&str>,
        ip: Option<std::net::IpAddr>,
    ) -> Result<std::result::Result<TokenResponse, OAuthError>> {
        self.master_key()?;
        let v = self.run_pipeline_full(super::verify::Presented {
            ip,
            ..super::verify::Presented::new(api_key, Purpose::Authenticate)
        })?;
        if let Some(secs) = v.retry_after_secs().or(v.rate_limited_for) {
            return Err(Error::RateLimited {
                retry_after_secs: secs,
            });
        }
        let (Some(key), Some(snap)) = (v.key.as_ref(), v.snapshot.as_ref()) else {
            return Ok(Err(OAuthError::InvalidClient(format!(
                "the API key {}",
                v.code().refusal_reason()
            ))));
        };
        self.issue_for_key(key, &key.effective, snap, scope, audience)
    }

    /// `grant_type=api_key` for a caller already authenticated by its API key (as
    /// [`Kms::authenticate`] does), so a server can check what the key's application
    /// requires, such as a request signature, before anything is issued. The operator,
    /// who has no API key, is refused.
    pub fn issue_access_token_for(
        &self,
        caller: &Caller,
        scope: Option<&str>,
        audience: Option<&str>,
    ) -> Result<std::result::Result<TokenResponse, OAuthError>> {
        self.master_key()?;
        let snap = self.snapshot()?;
        let (Some(key), Some(effective)) = (caller.key(), caller.effective_in(&snap)) else {
            return Ok(Err(OAuthError::InvalidClient(
                "only an API key can be exchanged for an access token".into(),
            )));
        };
        self.issue_for_key(key, &effective, &snap, scope, audience)
    }

    /// Issues a pair for the verified `key`, holding `effective` in `snap`.
    fn issue_for_key(
        &self,
        key: &crate::api_key::cache::CachedKey,
        effective: &crate::policy::snapshot::EffectiveSet,
        snap: &crate::policy::snapshot::PermissionSnapshot,
        scope: Option<&str>,
        audience: Option<&str>,
    ) -> Result<std::result::Result<TokenResponse, OAuthError>> {
        let granted = match scope.map(str::trim).filter(|s| !s.is_empty()) {
            None => snap
                .scopes_of(effective)
                .iter()
                .map(Scope::as_str)
                .collect::<Vec<_>>()
                .join(" "),
            Some(requested) => {
                let mut out = Vec::new();
                for s in requested.split_whitespace() {
                    if Scope::parse(s).is_err() || !snap.holds_defined(effective, s) {
                        return Ok(Err(OAuthError::InvalidScope(format!(
                            "the scope {} is not held by this API key",
                            crate::policy::scope::shown(s)
                        ))));
                    }
                    if !out.contains(&s) {
                        out.push(s);
                    }
                }
                out.join(" ")
            }
        };
        let audience = match audience.map(str::trim).filter(|a| !a.is_empty()) {
            None => self.inner.jwt.default_audience.clone(),
            Some(a)
                if a.len() <= MAX_AUDIENCE_LEN
                    && !a.chars().any(|c| c.is_whitespace() || c.is_control()) =>
            {
                a.to_owned()
            }
            Some(_) => {
                return Ok(Err(OAuthError::InvalidRequest(format!(
                    "audience must be 1 to {MAX_AUDIENCE_LEN} characters without spaces"
                ))))
            }
        };
        if let Err(r) = self.spend_use(key)? {
            return Ok(Err(OAuthError::InvalidClient(format!(
                "the API key {}",
                r.code.refusal_reason()
            ))));
        }
        let family = self.new_id("fam_", 16)?;
        let mut token = String::from(REFRESH_PREFIX);
        push_base62(
            &mut token,
            REFRESH_ID_LEN + REFRESH_SECRET_LEN,
            self.inner.random.as_ref(),
        )?;
        let now = self.inner.clock.now();
        let refresh = refresh_record(
            &token,
            RefreshGrant {
                family_id: &family,
                token_id: &key.record.id,
                app_id: &key.record.app_id,
                scope: &granted,
                audience: &audience,
                // The family's absolute end: no refresh moves it.
                expires_at: now.plus_secs(self.inner.jwt.refresh_ttl_secs),
            },
            now,
        )?;
        self.inner
            .store
            .apply(&[Mutation::InsertRefreshToken(refresh)])?;
        let access = self.sign_access(
            &key.record.id,
            &key.record.app_id,
            &granted,
            &audience,
            &family,
        )?;
        Ok(Ok(TokenResponse {
            access_token: access,
            token_type: "Bearer",
            expires_in: self.inner.jwt.access_ttl_secs,
            refresh_token: token,
            scope: granted,
        }))
    }

    /// `grant_type=refresh_token`: exchanges a refresh token once for a new pair.
    ///
    /// - The access token holds no more than the key holds now: the family's scope (that of
    ///   the first exchange; `scope` may narrow it) intersected with the key's current
    ///   effective set under the current policy. The successor keeps the family's scope, so
    ///   a permission given back is granted again, and its expiry: a family ends
    ///   `refresh_ttl_secs` after the first exchange, however often it is refreshed.
    /// - The key is re-checked as it is now, from `ip`: revoked, expired, deleted, its
    ///   application disabled or deleted, outside its or its application's network
    ///   allow-list, or out of uses → `invalid_grant`; its rate limit → `RateLimited`. A
    ///   refresh spends one use.
    /// - The successor is derived from the presented token under the master key, so an
    ///   exchange repeated inside the overlap window gets the same successor again (no second
    ///   branch) while only its SHA-256 is stored. A repeat after the window, or once the
    ///   successor itself was exchanged, is reuse: the whole family is revoked, refresh and
    ///   access tokens alike.
    pub fn refresh_access_token(
        &self,
        refresh_token: &str,
        scope: Option<&str>,
        ip: Option<std::net::IpAddr>,
    ) -> Result<std::result::Result<TokenResponse, OAuthError>> {
        self.master_key()?;
        // A lost race to spend the token is decided again on the record as the winner left
        // it: inside the window that is the winner's successor, outside it reuse.
        for _ in 0..2 {
            if let Some(answer) = self.try_refresh(refresh_token, scope, ip)? {
                return Ok(answer);
            }
        }
        Err(Error::internal(
            "a refresh token was spent twice by concurrent exchanges",
        ))
    }

    /// One attempt of [`refresh_access_token`](Self::refresh_access_token); `None` when
    /// another exchange spent the token between reading and spending it.
    fn try_refresh(
        &self,
        refresh_token: &str,
        scope: Option<&str>,
        ip: Option<std::net::IpAddr>,
    ) -> Result<Option<std::result::Result<TokenResponse, OAuthError>>> {
        let invalid = |m: &str| Ok(Some(Err(OAuthError::InvalidGrant(m.to_owned()))));
        let Some(record) = self.find_refresh(refresh_token)? else {
            return invalid("the refresh token is not valid");
        };
        let now = self.inner.clock.now();
        let successor = self.successor_of(refresh_token)?;
        match record.status {
            RefreshStatus::Revoked => return invalid("the refresh token was revoked"),
            _ if record.expires_at <= now => return invalid("the refresh token has expired"),
            RefreshStatus::Spent => {
                let in_overlap = self.inner.jwt.refresh_overlap_secs > 0
                    && record
                        .spent_at
                        .is_some_and(|t| t.plus_secs(self.inner.jwt.refresh_overlap_secs) >= now);
                // Inside the window only the successor it was exchanged for, still unused,
                // may be handed out again.
                let successor_unused = in_overlap
                    && self.find_refresh(&successor)?.is_some_and(|s| {
                        s.status == RefreshStatus::Active && s.family_id == record.family_id
                    });
                if !successor_unused {
                    self.revoke_family(&record, None, true)?;
                    return invalid(REUSED);
                }
            }
            RefreshStatus::Active => {}
        }
        if self.revoked_contains(&format!("family:{}", record.family_id)) {
            return invalid("the refresh token was revoked");
        }
        let snap = self.snapshot()?;
        let Some(key) = self.current_key(&record.token_id, &snap)? else {
            return invalid("the API key of this refresh token no longer exists");
        };
        let refused = |code: VerifyCode| {
            invalid(&format!(
                "the API key of this refresh token {}",
                code.refusal_reason()
            ))
        };
        if let Some(code) = self.refusal(&key, None, &snap, ip, None, now) {
            return refused(code);
        }
        match self.take_limits(&key, Purpose::Authenticate)? {
            Ok(_) => {}
            Err(r) => match r.retry_after {
                Some(secs) => {
                    return Err(Error::RateLimited {
                        retry_after_secs: secs,
                    })
                }
                None => return refused(r.code),
            },
        }
        let granted = match refreshed_scope(&snap, &key.effective, &record.scope, scope) {
            Ok(g) => g,
            Err(e) => return Ok(Some(Err(e))),
        };
        if let Err(r) = self.spend_use(&key)? {
            return refused(r.code);
        }
        if record.status == RefreshStatus::Active {
            let next = refresh_record(
                &successor,
                RefreshGrant {
                    family_id: &record.family_id,
                    token_id: &record.token_id,
                    app_id: &record.app_id,
                    scope: &record.scope,
                    audience: &record.audience,
                    expires_at: record.expires_at,
                },
                now,
            )?;
            let batch = [
                Mutation::SpendRefreshToken {
                    id: record.id.clone(),
                    at: now,
                },
                Mutation::InsertRefreshToken(next),
            ];
            match self.inner.store.apply(&batch) {
                Ok(()) => {}
                Err(crate::error::StoreError::Conflict(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
        let access = self.sign_access(
            &record.token_id,
            &record.app_id,
            &granted,
            &record.audience,
            &record.family_id,
        )?;
        Ok(Some(Ok(TokenResponse {
            access_token: access,
            token_type: "Bearer",
            expires_in: self.inner.jwt.access_ttl_secs,
            refresh_token: successor,
            scope: granted,
        })))
    }

    /// The refresh token a presented one is exchanged for: derived from it under the master
    /// key, so the same presentation always yields the same successor and no plaintext needs
    /// keeping. Only a holder of the presented token (and the server) can compute it.
    fn successor_of(&self, presented: &str) -> Result<String> {
        let mut stream = self
            .master_key()?
            .keyed_stream("refresh-token successor", presented.as_bytes())?;
        let mut token = String::from(REFRESH_PREFIX);
        push_base62_from(&mut token, REFRESH_ID_LEN + REFRESH_SECRET_LEN, |buf| {
            stream.fill(buf)
        })?;
        Ok(token)
    }

    /// The stored record of a presented refresh token, when the secret matches.
    pub(super) fn find_refresh(&self, token: &str) -> Result<Option<RefreshRecord>> {
        let Some(parts) = parse_refresh(token) else {
            return Ok(None);
        };
        let Some(record) = self.inner.store.get_refresh_token(parts.id)? else {
            return Ok(None);
        };
        let matches: bool = sha256_hex(parts.secret)
            .as_bytes()
            .ct_eq(record.secret_hash.as_bytes())
            .into();
        Ok(matches.then_some(record))
    }

    /// Revokes the family of `record` and its access tokens; `reuse` records it as the
    /// security event it is. A family already revoked is left alone: no second event.
    fn revoke_family(
        &self,
        record: &RefreshRecord,
        caller: Option<&Caller>,
        reuse: bool,
    ) -> Result<()> {
        let family = record.family_id.as_str();
        let deny_id = format!("family:{family}");
        let until = self
            .inner
            .clock
            .now()
            .plus_secs(self.inner.jwt.access_ttl_secs + self.inner.jwt.leeway_secs as i64);
        let audit = if reuse {
            Audit::success("refresh.reuse", family).failure()
        } else {
            Audit::success("refresh.revoke", family)
        }
        .app(record.app_id.clone());
        let revoked = self.commit_unless(
            caller,
            audit,
            vec![
                Mutation::RevokeRefreshFamily(family.to_owned()),
                Mutation::PutRevocation(Revocation {
                    id: deny_id.clone(),
                    expires_at: until,
                }),
            ],
            || {
                Ok(self.revoked_contains(&deny_id)
                    || self
                        .inner
                        .store
                        .get_refresh_token(&record.id)?
                        .is_none_or(|r| r.status == RefreshStatus::Revoked))
            },
        )?;
        if revoked && reuse {
            self.emit(&crate::security_event::SecurityEvent::RefreshReuse {
                family_id: family.to_owned(),
            });
        }
        Ok(())
    }

    fn sign_access(
        &self,
        sub: &str,
        app_id: &str,
        scope: &str,
        aud: &str,
        family: &str,
    ) -> Result<String> {
        let ring = self.inner.keyring.load();
        let key = ring.active().ok_or_else(|| Error::Unavailable {
            message: "no active signing key".into(),
            source: None,
        })?;
        let Some(encoding) = key.encoding.as_ref() else {
            return Err(Error::internal("the active key has no private material"));
        };
        let now = self.inner.clock.now().unix();
        let mut jti = String::new();
        push_base62(&mut jti, 22, self.inner.random.as_ref())?;
        let claims = AccessClaims {
            iss: self.inner.jwt.issuer.clone(),
            sub: sub.to_owned(),
            aud: aud.to_owned(),
            exp: now + self.inner.jwt.access_ttl_secs,
            iat: now,
            nbf: now,
            jti,
            scope: scope.to_owned(),
            app_id: app_id.to_owned(),
            fid: family.to_owned(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.record.kid.clone());
        header.typ = Some(TYP.to_owned());
        jsonwebtoken::encode(&header, &claims, encoding)
            .map_err(|e| Error::internal(format!("signing failed: {e}")))
    }

    /// Validates an access token in-process: EdDSA only, `typ: at+jwt`, a `kid` of the key
    /// ring, `iss`, `aud` (`audience`, or the default), `exp` and `nbf` with the configured
    /// leeway, the deny-list, and that the API key it was issued for is still valid (one store
    /// read: revoked, expired or deleted keys and disabled applications refuse it).
    pub fn validate_access_token(
        &self,
        jwt: &str,
        audience: Option<&str>,
    ) -> std::result::Result<AccessClaims, JwtError> {
        let aud = audience.unwrap_or(&self.inner.jwt.default_audience);
        let claims = self.decode_access(jwt, Some(aud))?;
        // An access token is worth no more than the API key it was issued for: once that is
        // revoked, expired, deleted or its application disabled, refuse it here as
        // introspection does. (A resource server holding only the JWKS cannot know.)
        // Counted for the key's usage, like a verification of the key itself.
        match self.api_key_is_live(&claims.sub) {
            Ok(true) => {
                self.count_usage(&claims.app_id, &claims.sub, super::VerifyCode::Valid);
                Ok(claims)
            }
            Ok(false) => {
                self.count_usage(&claims.app_id, &claims.sub, super::VerifyCode::Revoked);
                Err(JwtError::Revoked)
            }
            Err(_) => Err(JwtError::Unavailable),
        }
    }

    fn decode_access(
        &self,
        jwt: &str,
        audience: Option<&str>,
    ) -> std::result::Result<AccessClaims, JwtError> {
        if jwt.len() > MAX_JWT_LEN {
            return Err(JwtError::Malformed);
        }
        // Parsed and checked here rather than by jsonwebtoken::decode, which rebuilds the
        // public key from its bytes on every call: the key ring holds ready verifying keys.
        let mut parts = jwt.split('.');
        let (Some(h64), Some(c64), Some(s64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        let b64 = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header: JwsHeader =
            serde_json::from_slice(&b64.decode(h64).map_err(|_| JwtError::Malformed)?)
                .map_err(|_| JwtError::Malformed)?;
        if header.alg != "EdDSA" || header.typ.as_deref() != Some(TYP) || header.crit.is_some() {
            return Err(JwtError::Malformed);
        }
        let ring = self.inner.keyring.load();
        let key = header
            .kid
            .as_deref()
            .and_then(|k| ring.find(k))
            .ok_or(JwtError::UnknownKey)?;
        let signature: [u8; 64] = b64
            .decode(s64)
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or(JwtError::Malformed)?;
        let signing_input = &jwt.as_bytes()[..h64.len() + 1 + c64.len()];
        // Our own keys are never weak, so the plain (RFC 8032, canonical-S) check serves;
        // it is what jsonwebtoken does too.
        ed25519_dalek::Verifier::verify(
            &key.verifying,
            signing_input,
            &ed25519_dalek::Signature::from_bytes(&signature),
        )
        .map_err(|_| JwtError::BadSignature)?;
        let c: AccessClaims =
            serde_json::from_slice(&b64.decode(c64).map_err(|_| JwtError::Claims)?)
                .map_err(|_| JwtError::Claims)?;
        if c.iss != self.inner.jwt.issuer || audience.is_some_and(|a| a != c.aud) {
            return Err(JwtError::Claims);
        }
        let now = self.inner.clock.now().unix();
        let leeway = self.inner.jwt.leeway_secs as i64;
        if c.exp + leeway <= now {
            return Err(JwtError::Expired);
        }
        if c.nbf - leeway > now {
            return Err(JwtError::NotYetValid);
        }
        if self.revoked_contains(&format!("jti:{}", c.jti))
            || self.revoked_contains(&format!("family:{}", c.fid))
        {
            return Err(JwtError::Revoked);
        }
        Ok(c)
    }

    fn api_key_is_live(&self, token_id: &str) -> Result<bool> {
        let now = self.inner.clock.now();
        let Some(t) = self.inner.store.get_token(token_id)? else {
            return Ok(false);
        };
        if t.status == TokenStatus::Revoked || t.is_expired(now) {
            return Ok(false);
        }
        Ok(self
            .inner
            .store
            .get_app(&t.app_id)?
            .is_some_and(|a| a.status == AppStatus::Active))
    }

    /// RFC 7662 introspection (`token.verify`) of an access or refresh token. Anything not
    /// active — unknown, expired, revoked, of a revoked or deleted API key, or of another
    /// tenant — is exactly `{"active": false}`.
    pub fn introspect(&self, caller: &Caller, token: &str) -> Result<Introspection> {
        caller.require(&*self.snapshot()?, "token.verify")?;
        let now = self.inner.clock.now();
        if parse_refresh(token).is_some() {
            let Some(r) = self.find_refresh(token)? else {
                return Ok(Introspection::inactive());
            };
            let live = r.status == RefreshStatus::Active
                && r.expires_at > now
                && !self.revoked_contains(&format!("family:{}", r.family_id))
                && caller.sees_app(&r.app_id)
                && self.api_key_is_live(&r.token_id)?;
            if !live {
                return Ok(Introspection::inactive());
            }
            return Ok(Introspection::Active {
                active: true,
                scope: r.scope,
                client_id: r.app_id.clone(),
                sub: r.token_id,
                aud: Some(r.audience),
                iss: Some(self.inner.jwt.issuer.clone()),
                exp: r.expires_at.unix(),
                iat: r.created_at.unix(),
                nbf: None,
                jti: None,
                token_type: "refresh_token",
                app_id: r.app_id,
            });
        }
        let Ok(c) = self.decode_access(token, None) else {
            return Ok(Introspection::inactive());
        };
        if !caller.sees_app(&c.app_id) || !self.api_key_is_live(&c.sub)? {
            return Ok(Introspection::inactive());
        }
        Ok(Introspection::Active {
            active: true,
            scope: c.scope,
            client_id: c.app_id.clone(),
            sub: c.sub,
            aud: Some(c.aud),
            iss: Some(c.iss),
            exp: c.exp,
            iat: c.iat,
            nbf: Some(c.nbf),
            jti: Some(c.jti),
            token_type: "Bearer",
            app_id: c.app_id,
        })
    }

    /// RFC 7009 revocation (`token.verify`): an access token goes on the deny-list until it
    /// expires; a refresh token revokes its family. Each is audited once: revoking what is
    /// already revoked changes nothing and writes no event. Unknown tokens are accepted
    /// silently.
    pub fn revoke_access_token(&self, caller: &Caller, token: &str) -> Result<()> {
        caller.require(&*self.snapshot()?, "token.verify")?;
        if parse_refresh(token).is_some() {
            if let Some(r) = self.find_refresh(token)? {
                if caller.sees_app(&r.app_id) {
                    self.revoke_family(&r, Some(caller), false)?;
                }
            }
            return Ok(());
        }
        // An expired or already revoked token (itself or its family) does not decode.
        let claims = match self.decode_access(token, None) {
            Ok(c) => c,
            Err(_) => return Ok(()),
        };
        if caller.sees_app(&claims.app_id) {
            let deny_id = format!("jti:{}", claims.jti);
            let until =
                Timestamp::from_unix(claims.exp).plus_secs(self.inner.jwt.leeway_secs as i64);
            let audit = Audit::success("access.revoke", claims.jti.clone())
                .app(claims.app_id.clone())
                .details(serde_json::json!({"sub": claims.sub, "family": claims.fid}));
            self.commit_unless(
                Some(caller),
                audit,
                vec![Mutation::PutRevocation(Revocation {
                    id: deny_id.clone(),
                    expires_at: until,
                })],
                || Ok(self.revoked_contains(&deny_id)),
            )?;
        }
        Ok(())
    }

    pub(crate) fn revoked_contains(&self, id: &str) -> bool {
        self.inner
            .revoked
            .read()
            .map(|set| set.contains(id))
            .unwrap_or(true)
    }

    pub(crate) fn load_revocations(&self) -> Result<()> {
        let all = self.inner.store.list_revocations()?;
        if let Ok(mut set) = self.inner.revoked.write() {
            set.clear();
            set.extend(all.into_iter().map(|r| r.id));
        }
        Ok(())
    }
}

/// The JWS header fields validation looks at.
#[derive(serde::Deserialize)]
struct JwsHeader {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    /// Critical extensions: none are understood, so any is refused (RFC 7515 §4.1.11).
    #[serde(default)]
    crit: Option<serde_json::Value>,
}
