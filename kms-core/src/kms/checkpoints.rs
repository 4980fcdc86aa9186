//! Audit checkpoints: the chain's head (`seq`, `hash`, time) signed with the active
//! signing key, kept outside the database. The chain alone cannot show that its newest
//! events were deleted (a shorter chain is still a valid chain); a checkpoint of a `seq`
//! the database no longer holds, or holds with another hash, can.
//!
//! A checkpoint is a compact JWS (EdDSA, `typ: kms-audit-checkpoint+jwt`) over
//! `{"seq", "hash", "at"}`, so anyone holding the JWKS can check it; the `seq`, `hash`
//! and `at` beside it are a convenience, and verification trusts only the signed payload.

use base64::Engine;
use ed25519_dalek::Verifier;
use jsonwebtoken::{Algorithm, Header};
use serde::{Deserialize, Serialize};

use super::{Caller, Kms};
use crate::audit::{AuditAnchor, AuditVerification, AUDIT_ANCHOR_KEY};
use crate::error::{Error, Result};
use crate::store::KeyAlgorithm;

/// The JWS `typ` of a checkpoint.
pub const CHECKPOINT_TYP: &str = "kms-audit-checkpoint+jwt";

/// A signed checkpoint of the audit chain's head, as written to the checkpoint file (one
/// JSON object a line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditCheckpoint {
    /// The newest event's sequence number.
    pub seq: u64,
    /// Its hash.
    pub hash: String,
    /// When the checkpoint was made (RFC 3339).
    pub at: String,
    /// The signing key.
    pub kid: String,
    /// The compact JWS over `{"seq", "hash", "at"}`.
    pub jws: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Signed {
    seq: u64,
    hash: String,
    at: String,
}

/// The result of checking the chain against checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointVerification {
    /// The chain is intact and agrees with every checkpoint.
    pub ok: bool,
    /// The chain's own verdict.
    pub chain: AuditVerification,
    /// Checkpoints read.
    pub checkpoints: u64,
    /// Checkpoints whose event was pruned by retention (not comparable, not a failure).
    pub pruned: u64,
    /// The newest checkpoint's `seq`.
    pub newest_checkpoint_seq: Option<u64>,
    /// The chain's newest `seq` (0 when empty).
    pub head_seq: u64,
    /// What is wrong, when something is (the first problem found).
    pub problem: Option<String>,
}

impl Kms {
    /// A signed checkpoint of the chain's head; `None` while the log is empty. Needs the
    /// master key (the signing keys are sealed under it).
    pub fn audit_checkpoint(&self) -> Result<Option<AuditCheckpoint>> {
        let Some(head) = self.inner.store.last_audit_event()? else {
            return Ok(None);
        };
        let ring = self.inner.keyring.load();
        let key = ring.active().ok_or_else(|| Error::Unavailable {
            message: "no active signing key (access tokens need a master key)".into(),
            source: None,
        })?;
        let Some(encoding) = key.encoding.as_ref() else {
            return Err(Error::internal("the active key has no private material"));
        };
        let signed = Signed {
            seq: head.seq,
            hash: head.hash,
            at: self.inner.clock.now().to_rfc3339(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.record.kid.clone());
        header.typ = Some(CHECKPOINT_TYP.to_owned());
        let jws = jsonwebtoken::encode(&header, &signed, encoding)
            .map_err(|e| Error::internal(format!("signing the checkpoint failed: {e}")))?;
        Ok(Some(AuditCheckpoint {
            seq: signed.seq,
            hash: signed.hash,
            at: signed.at,
            kid: key.record.kid.clone(),
            jws,
        }))
    }

    /// The newest event's `seq` (0 when the log is empty): what a checkpoint writer polls.
    pub fn audit_head_seq(&self) -> Result<u64> {
        Ok(self.inner.store.last_audit_event()?.map_or(0, |e| e.seq))
    }

    /// Checks the chain (as [`verify_audit`](Self::verify_audit)) and then every checkpoint
    /// against it (`audit.read`, system callers only): each signature under its key (any
    /// state, retired included), and the stored event at each checkpoint's `seq` with the
    /// same hash. A checkpoint beyond the chain's head means the newest events were
    /// deleted.
    pub fn verify_audit_checkpoints(
        &self,
        caller: &Caller,
        checkpoints: &[AuditCheckpoint],
    ) -> Result<CheckpointVerification> {
        let chain = self.verify_audit(caller)?;
        let head_seq = self.audit_head_seq()?;
        let anchor = match self.inner.store.get_meta(AUDIT_ANCHOR_KEY)? {
            Some(a) => AuditAnchor::from_meta_value(&a),
            None => None,
        };
        let keys = self.inner.store.list_signing_keys()?;
        let mut report = CheckpointVerification {
            ok: matches!(chain, AuditVerification::Intact { .. }),
            chain,
            checkpoints: checkpoints.len() as u64,
            pruned: 0,
            newest_checkpoint_seq: None,
            head_seq,
            problem: None,
        };
        if !report.ok {
            report.problem = Some("the hash chain itself is broken".into());
            return Ok(report);
        }
        for (line, cp) in checkpoints.iter().enumerate() {
            let line = line + 1;
            match self.check_checkpoint(cp, &keys, anchor.as_ref(), head_seq) {
                Ok(checked) => {
                    report.newest_checkpoint_seq = report.newest_checkpoint_seq.max(checked.seq);
                    report.pruned += u64::from(checked.pruned);
                }
                Err(Problem::Store(e)) => return Err(e),
                Err(Problem::Found { seq, why }) => {
                    report.newest_checkpoint_seq = report.newest_checkpoint_seq.max(seq);
                    report.ok = false;
                    report.problem = Some(format!("checkpoint {line}{why}"));
                    return Ok(report);
                }
            }
        }
        Ok(report)
    }
}

/// One checkpoint that checked out: its `seq`, and whether its event was pruned.
struct Checked {
    seq: Option<u64>,
    pruned: bool,
}

/// Why a checkpoint did not check out: what was found (after `checkpoint N`), with the
/// `seq` it records when its signature held, or a store failure.
enum Problem {
    Found { seq: Option<u64>, why: String },
    Store(Error),
}

impl From<Error> for Problem {
    fn from(e: Error) -> Self {
        Problem::Store(e)
    }
}

impl Kms {
    /// Checks one checkpoint against the chain ending at `head_seq`, pruned through
    /// `anchor`.
    fn check_checkpoint(
        &self,
        cp: &AuditCheckpoint,
        keys: &[crate::store::SigningKeyRecord],
        anchor: Option<&AuditAnchor>,
        head_seq: u64,
    ) -> std::result::Result<Checked, Problem> {
        let signed = open_checkpoint(cp, keys).map_err(|why| Problem::Found {
            seq: None,
            why: format!(": {why}"),
        })?;
        let found = |why: String| Problem::Found {
            seq: Some(signed.seq),
            why,
        };
        if signed.seq > head_seq {
            return Err(found(format!(
                " (signed at {}) records event {} but the chain ends at {head_seq}: its newest \
                 events were deleted",
                signed.at, signed.seq
            )));
        }
        if signed.seq <= anchor.map_or(0, |a| a.seq) {
            if anchor.is_some_and(|a| a.seq == signed.seq && a.hash != signed.hash) {
                return Err(found(
                    ": the anchor of the pruned events has another hash".to_owned(),
                ));
            }
            return Ok(Checked {
                seq: Some(signed.seq),
                pruned: true,
            });
        }
        let stored = self
            .inner
            .store
            .audit_after(signed.seq - 1, 1)
            .map_err(Error::from)?
            .into_iter()
            .next()
            .filter(|e| e.seq == signed.seq);
        match stored {
            Some(e) if e.hash == signed.hash => Ok(Checked {
                seq: Some(signed.seq),
                pruned: false,
            }),
            Some(_) => Err(found(format!(
                ": event {} has another hash than was signed",
                signed.seq
            ))),
            None => Err(found(format!(": event {} is missing", signed.seq))),
        }
    }
}

/// Checks a checkpoint's signature and returns its signed payload.
fn open_checkpoint(
    cp: &AuditCheckpoint,
    keys: &[crate::store::SigningKeyRecord],
) -> std::result::Result<Signed, String> {
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts = cp.jws.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a compact JWS".into());
    };
    let header: serde_json::Value = engine
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("its header is not base64url JSON")?;
    if header["alg"] != "EdDSA" || header["typ"] != CHECKPOINT_TYP {
        return Err("not an EdDSA checkpoint".into());
    }
    let kid = header["kid"].as_str().ok_or("its header names no key")?;
    let key = keys
        .iter()
        .find(|k| k.kid == kid && k.algorithm == KeyAlgorithm::EdDSA)
        .ok_or_else(|| {
            format!("it is signed by {kid:?}, which is not a signing key of this database")
        })?;
    let verifying = crate::access_token::keyring::verifying_key(key)?;
    let signature = engine
        .decode(s)
        .ok()
        .and_then(|b| ed25519_dalek::Signature::from_slice(&b).ok())
        .ok_or("its signature is malformed")?;
    let signing_input = format!("{h}.{p}");
    verifying
        .verify(signing_input.as_bytes(), &signature)
        .map_err(|_| "its signature does not verify".to_owned())?;
    let signed: Signed = engine
        .decode(p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("its payload is not the checkpoint's JSON")?;
    if signed.seq == 0 {
        return Err("it records event 0".into());
    }
    Ok(signed)
}
