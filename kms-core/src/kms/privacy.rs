//! The data-protection calls: a person's export, their erasure (crypto-shredding the
//! personal fields of their audit events, see [`crate::privacy`]), the erasure of an API
//! key with its metadata, and the sealing and opening of personal audit fields.

use std::collections::HashMap;

use serde::Serialize;

use super::audit_log::Audit;
use super::sessions::{SessionInfo, UserInfo};
use super::{Caller, Kms};
use crate::audit::AuditEvent;
use crate::error::{Error, Result};
use crate::page::{Page, PageRequest};
use crate::privacy::{
    new_person_key, open_person_key, open_personal, seal_personal, PersonKey, PersonalFields,
    PersonalStatus,
};
use crate::store::{Mutation, StoreError};

/// Most ids (the user and their sessions) one export matches audit events against.
const MAX_EXPORT_IDS: usize = 1_000;
/// Events per page of an export's audit part when the request does not say.
pub const DEFAULT_EXPORT_AUDIT_LIMIT: u32 = 100;
/// How many tokens back a rotation lineage is followed when a key is erased.
const MAX_LINEAGE: usize = 100;

/// Everything kms holds about a person (`GET /v1/users/{id}/export`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserExport {
    /// When the export was made.
    pub exported_at: crate::clock::Timestamp,
    /// The profile: email, name, status, roles (given and mapped), conditional grants,
    /// identities at providers, creation and last login.
    pub user: UserInfo,
    /// Every stored session, ended ones included, with address and user agent.
    pub sessions: Vec<SessionInfo>,
    /// A page of the audit events they caused or that concern them, newest first, with
    /// their personal fields opened.
    pub audit: Page<AuditEvent>,
}

impl Kms {
    /// Everything held about user `id` (`user.read`): profile, identities, sessions, roles
    /// and grants, and one page of the audit events whose actor, target or subject is the
    /// user or one of their sessions (their newest 999 sessions; `page.cursor` is the `seq`
    /// to continue below; `page.limit` 1–1000, default 100).
    pub fn export_user(&self, caller: &Caller, id: &str, page: PageRequest) -> Result<UserExport> {
        caller.require(&*self.snapshot()?, "user.read")?;
        let user = self.visible_user(caller, id)?;
        let (limit, before_seq) =
            super::audit_log::seq_page(&page, DEFAULT_EXPORT_AUDIT_LIMIT, "export")?;
        let sessions = self.inner.store.user_sessions(&user.id)?;
        let mut ids = vec![user.id.clone()];
        ids.extend(
            sessions
                .iter()
                .take(MAX_EXPORT_IDS - 1)
                .map(|s| s.id.clone()),
        );
        let items = self
            .inner
            .store
            .audit_concerning(&ids, before_seq, limit as usize + 1)?;
        let mut audit = super::audit_log::seq_page_of(items, limit);
        self.open_personal_fields(&mut audit.items)?;
        Ok(UserExport {
            exported_at: self.inner.clock.now(),
            user: UserInfo::from_record(&user),
            sessions: sessions.iter().map(SessionInfo::from_record).collect(),
            audit,
        })
    }

    /// Erases user `id` (`user.write`): deletes them with their identities and sessions,
    /// and destroys their person key, so the personal fields of their audit events cannot
    /// be opened again while the chain stays intact. Audited as `user.erase`, without any
    /// personal data.
    pub fn erase_user(&self, caller: &Caller, id: &str) -> Result<()> {
        caller.require(&*self.snapshot()?, "user.write")?;
        let user = self.visible_user(caller, id)?;
        let sessions = self.inner.store.user_sessions(&user.id)?.len();
        let had_key = self.inner.store.get_person_key(&user.id)?.is_some();
        let audit = Audit::success("user.erase", user.id.clone())
            .app(user.app_id.clone())
            .details(serde_json::json!({
                "identities": user.identities.len(),
                "sessions": sessions,
                "person_key_destroyed": had_key,
            }));
        self.commit(Some(caller), audit, vec![Mutation::ErasePerson(user.id)])
    }

    /// Erases API key `id` (`token.revoke`): deletes it with its metadata, and clears the
    /// metadata copied into the keys it was rotated from (superseded keys of its lineage).
    /// Audit events of keys never carry metadata. Audited as `token.erase`.
    pub fn erase_token(&self, caller: &Caller, id: &str) -> Result<()> {
        caller.require(&*self.snapshot()?, "token.revoke")?;
        let token = self.visible_token(caller, id)?;
        self.inner.cache.invalidate_token(&token.id);
        let mut batch = vec![Mutation::EraseToken(token.id.clone())];
        let mut previous = token.rotated_from.clone();
        let mut cleared = 0usize;
        for _ in 0..MAX_LINEAGE {
            let Some(prev_id) = previous.take() else {
                break;
            };
            let Some(mut prev) = self.inner.store.get_token(&prev_id)? else {
                break;
            };
            if prev.app_id != token.app_id {
                break;
            }
            previous = prev.rotated_from.clone();
            if !prev.metadata.is_empty() {
                prev.metadata.clear();
                self.inner.cache.invalidate_token(&prev.id);
                batch.push(Mutation::UpdateToken(prev));
                cleared += 1;
            }
        }
        let audit = Audit::success("token.erase", token.id.clone())
            .app(token.app_id.clone())
            .details(serde_json::json!({ "predecessors_cleared": cleared }));
        self.commit(Some(caller), audit, batch)
    }

    /// Ids of sessions that ended more than `age` seconds before `now` (retention).
    pub(crate) fn ended_sessions(
        &self,
        now: crate::clock::Timestamp,
        age: i64,
    ) -> Result<Vec<String>> {
        let cutoff = now.plus_secs(-age);
        let idle = self.inner.sessions.idle_secs;
        Ok(self.inner.store.ended_sessions(
            cutoff,
            cutoff.plus_secs(-idle),
            super::audit_log::RETENTION_SESSION_BATCH,
        )?)
    }

    /// Seals `personal` under the subject's person key (made in the same batch when they
    /// have none yet), appends `event` at the chain's head, and applies the batch. When
    /// another writer made the subject's key meanwhile, retries once with theirs.
    pub(crate) fn commit_event(
        &self,
        batch: Vec<Mutation>,
        event: AuditEvent,
        personal: &PersonalFields,
    ) -> Result<()> {
        let has_personal = personal.ip.is_some() || !personal.details.is_empty();
        // A person erased by this very batch (erasing oneself) gets no key again: their
        // personal fields are left out of the event instead.
        let erased = |subject: &str| {
            batch
                .iter()
                .any(|m| matches!(m, Mutation::ErasePerson(id) if id == subject))
        };
        let sealing_for = event.subject.clone().filter(|s| has_personal && !erased(s));
        let mut batch = batch;
        let base = batch.len();
        for attempt in 0..2 {
            batch.truncate(base);
            let mut event = event.clone();
            let mut inserted = false;
            if let Some(subject) = &sealing_for {
                let random = self.inner.random.as_ref();
                let master = self.inner.master_key.as_ref();
                let key = match self.inner.store.get_person_key(subject)? {
                    Some(record) => open_person_key(master, &record)?,
                    None => {
                        let (record, key) = new_person_key(master, subject, event.at, random)?;
                        batch.push(Mutation::InsertPersonKey(record));
                        inserted = true;
                        key
                    }
                };
                event.sealed_personal = Some(seal_personal(&key, subject, personal, random)?);
            }
            batch.push(Mutation::ChainAudit(event));
            match self.inner.store.apply(&batch) {
                Err(StoreError::Conflict(_)) if inserted && attempt == 0 => continue,
                other => return other.map_err(Into::into),
            }
        }
        Err(Error::internal("the person key could not be stored"))
    }

    /// Opens the personal fields of listed events: back into `ip` and `details` when the
    /// subject's key opens them, else marked `erased` (no key) or `unavailable` (a key this
    /// process cannot open). The sealed form is not shown.
    pub(crate) fn open_personal_fields(&self, events: &mut [AuditEvent]) -> Result<()> {
        let master = self.inner.master_key.as_ref();
        // Per subject: their key, or why their fields cannot be opened.
        let mut keys: HashMap<String, std::result::Result<PersonKey, PersonalStatus>> =
            HashMap::new();
        for e in events.iter_mut() {
            let (Some(subject), Some(sealed)) = (e.subject.clone(), e.sealed_personal.take())
            else {
                continue;
            };
            let key = match keys.entry(subject.clone()) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(match self.inner.store.get_person_key(&subject)? {
                        None => Err(PersonalStatus::Erased),
                        Some(r) => {
                            open_person_key(master, &r).map_err(|_| PersonalStatus::Unavailable)
                        }
                    })
                }
            };
            let opened = match key {
                Ok(key) => open_personal(key, &subject, &sealed).ok(),
                Err(status) => {
                    e.personal = Some(*status);
                    continue;
                }
            };
            match opened {
                Some(fields) => {
                    if fields.ip.is_some() {
                        e.ip = fields.ip;
                    }
                    if let serde_json::Value::Object(details) = &mut e.details {
                        details.extend(fields.details);
                    }
                }
                None => e.personal = Some(PersonalStatus::Unavailable),
            }
        }
        Ok(())
    }
}
