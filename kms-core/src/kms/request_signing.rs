//! Request signing for applications that require it: a per-application secret, sealed
//! under the master key, and the check of each call made on the application's behalf (by
//! one of its API keys, or with a refresh token of one of them).

use base64::Engine;

use super::audit_log::Audit;
use super::{Caller, Kms};
use crate::application::Application;
use crate::defence::request_signing::{SignatureError, SignedRequest};
use crate::error::Result;
use crate::store::Mutation;

impl Kms {
    /// Makes a new request-signing secret for an application (`app.write`) and returns it;
    /// it is shown this once and stored only sealed under the master key. The previous
    /// secret stops working at once.
    pub fn rotate_request_signing_secret(&self, caller: &Caller, app_id: &str) -> Result<String> {
        caller.require(&*self.snapshot()?, "app.write")?;
        let master = self.master_key()?;
        let mut app = self.visible_app(caller, app_id)?;
        let mut raw = [0u8; 32];
        self.inner.random.fill(&mut raw)?;
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let context = format!("signing:{}", app.id);
        app.security.signing_secret =
            Some(master.seal(&context, secret.as_bytes(), self.inner.random.as_ref())?);
        let audit = Audit::success("app.signing_secret.rotate", app.id.clone()).app(app.id.clone());
        self.commit(Some(caller), audit, vec![Mutation::UpdateApp(app)])?;
        Ok(secret)
    }

    /// Checks the signature of a call by `caller` when its application requires signed
    /// requests (as of the caller's authentication); `Ok(Ok(()))` when it does not. This
    /// covers every call an API key authenticates: management calls, `/v1/verify`,
    /// introspection, revocation and the `api_key` grant. Nonces are per application.
    pub fn check_signed_request(
        &self,
        caller: &Caller,
        request: &SignedRequest<'_>,
        signature: &str,
    ) -> Result<std::result::Result<(), SignatureError>> {
        if caller.token_id().is_none() {
            return Ok(Ok(()));
        }
        // The application as of the caller's authentication: no store read.
        match caller.app() {
            Some(app) => self.check_app_signature(app, request, signature),
            None => Ok(Ok(())),
        }
    }

    /// Checks the signature of a `refresh_token` grant when the application of the
    /// refresh token's family (the application of the API key it was issued for, as it is
    /// now) requires signed requests; `Ok(Ok(()))` when it does not, and for a refresh
    /// token that names no family (the grant itself then fails). Call it before
    /// [`Kms::refresh_access_token`], so an unsigned request spends nothing.
    pub fn check_signed_refresh(
        &self,
        refresh_token: &str,
        request: &SignedRequest<'_>,
        signature: &str,
    ) -> Result<std::result::Result<(), SignatureError>> {
        let Some(record) = self.find_refresh(refresh_token)? else {
            return Ok(Ok(()));
        };
        match self.inner.store.get_app(&record.app_id)? {
            Some(app) => self.check_app_signature(&app, request, signature),
            None => Ok(Ok(())),
        }
    }

    /// The one rule: a request on behalf of `app` needs a good signature exactly when `app`
    /// requires signed requests.
    fn check_app_signature(
        &self,
        app: &Application,
        request: &SignedRequest<'_>,
        signature: &str,
    ) -> Result<std::result::Result<(), SignatureError>> {
        if !app.security.require_signed_requests {
            return Ok(Ok(()));
        }
        let (Some(sealed), Ok(master)) =
            (app.security.signing_secret.as_deref(), self.master_key())
        else {
            // Signing is required but no secret was ever issued: nothing can verify.
            return Ok(Err(SignatureError::BadSignature));
        };
        let Ok(secret) = master.open(&format!("signing:{}", app.id), sealed) else {
            return Ok(Err(SignatureError::BadSignature));
        };
        let now = self.inner.clock.now();
        let verifier = &self.inner.request_verifier;
        let ttl = verifier.nonce_ttl();
        Ok(
            verifier.verify_with(&app.id, &secret, request, signature, now, |nonce| {
                self.inner.counters.claim_nonce(nonce, ttl)
            }),
        )
    }
}
