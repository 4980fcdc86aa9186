//! The compliance report an auditor reads: one finding per control (keys without expiry,
//! keys past the rotation policy, unused keys, keys holding `admin`, applications open to
//! every network, signing-key and master-key age, the audit chain and retention, lockouts
//! and refresh-token reuse in the period, users who stopped signing in), each with a count,
//! the ids concerned and a pass or fail against the operator's thresholds. Ids and counts
//! only: never a secret, a hash or metadata.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::{Caller, Kms};
use crate::api_key::TokenStatus;
use crate::application::Application;
use crate::audit::AuditVerification;
use crate::clock::Timestamp;
use crate::error::Result;
use crate::identity::UserStatus;
use crate::policy::snapshot::PermissionSnapshot;
use crate::policy::GrantTarget;
use crate::store::{AuditQuery, KeyState, TokenRecord};

/// Days without use after which a key counts as unused, and without a login after which
/// a user does (the findings `tokens_unused_90d` and `users_without_login_90d`).
pub const UNUSED_DAYS: i64 = 90;
/// Most ids listed per finding; `count` stays exact and `items_truncated` says so.
pub const MAX_FINDING_ITEMS: usize = 1_000;
/// Rows read per store call while the report walks applications, keys, users and events.
const PAGE: usize = 1_000;
const DAY: i64 = 86_400;

/// Every finding id, in the order the report lists them.
pub const FINDING_IDS: [&str; 12] = [
    "tokens_without_expiry",
    "tokens_over_max_age",
    "tokens_unused_90d",
    "admin_tokens",
    "apps_without_network_allow_list",
    "signing_key_age",
    "master_key_age",
    "audit_chain",
    "audit_retention",
    "lockouts",
    "refresh_token_reuse",
    "users_without_login_90d",
];

/// What the report checks against: the operator's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComplianceSettings {
    /// The rotation policy: active keys created longer ago than this fail
    /// `tokens_over_max_age` (default 365 days).
    pub max_token_age_secs: i64,
    /// The active signing key may be at most this old (default 90 days).
    pub max_signing_key_age_secs: i64,
    /// The master key may be at most this old (default 365 days).
    pub max_master_key_age_secs: i64,
    /// The period lockouts and refresh-token reuse are counted over, ending now (default
    /// 30 days).
    pub period_secs: i64,
    /// Audit events must be kept at least this long: an audit retention shorter than it
    /// fails `audit_retention` (default 365 days).
    pub min_audit_retention_secs: i64,
    /// The audit retention the server applies (`None`: every event is kept).
    pub audit_retention_secs: Option<i64>,
    /// The retention of expired keys the server applies (`None`: kept), reported as is.
    pub expired_token_retention_secs: Option<i64>,
    /// The retention of ended sessions (`None`: kept), reported as is.
    pub session_retention_secs: Option<i64>,
    /// The retention of usage buckets (`None`: kept), reported as is.
    pub usage_retention_secs: Option<i64>,
    /// The most items each finding may count and still pass, by finding id; a finding not
    /// named allows none. Default: `admin_tokens` allows 1 (the root token).
    pub allowed: BTreeMap<String, u64>,
}

impl Default for ComplianceSettings {
    fn default() -> Self {
        ComplianceSettings {
            max_token_age_secs: 365 * DAY,
            max_signing_key_age_secs: 90 * DAY,
            max_master_key_age_secs: 365 * DAY,
            period_secs: 30 * DAY,
            min_audit_retention_secs: 365 * DAY,
            audit_retention_secs: None,
            expired_token_retention_secs: None,
            session_retention_secs: None,
            usage_retention_secs: Some(400 * DAY),
            allowed: BTreeMap::from([("admin_tokens".to_owned(), 1)]),
        }
    }
}

impl ComplianceSettings {
    /// How many items `finding` may count and still pass.
    pub fn allowed_for(&self, finding: &str) -> u64 {
        self.allowed.get(finding).copied().unwrap_or(0)
    }
}

/// Whether a finding, or the whole report, passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FindingStatus {
    /// Within the threshold.
    Pass,
    /// Over it.
    Fail,
}

impl FindingStatus {
    /// `pass` or `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingStatus::Pass => "pass",
            FindingStatus::Fail => "fail",
        }
    }
}

/// One control of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// Stable id (`tokens_without_expiry`, ...).
    pub id: String,
    /// What it checks, for people.
    pub title: String,
    /// `fail` when `count` is over `limit`.
    pub status: FindingStatus,
    /// How many objects the finding concerns.
    pub count: u64,
    /// The most it may count and still pass (the operator's threshold).
    pub limit: u64,
    /// Their ids (token, application, user, key ids; lockout sources; refresh-token
    /// families), at most [`MAX_FINDING_ITEMS`].
    pub items: Vec<String>,
    /// Whether `items` lists fewer than `count`.
    pub items_truncated: bool,
    /// The measured values and thresholds behind the verdict (ages in days, the audit
    /// chain's state, retention settings, ...).
    pub details: Map<String, Value>,
}

/// The window lockouts and refresh-token reuse are counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReportPeriod {
    /// Start (inclusive).
    pub from: Timestamp,
    /// End: when the report was made.
    pub to: Timestamp,
}

/// How many findings passed and failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ComplianceSummary {
    /// Findings within their threshold.
    pub passed: u64,
    /// Findings over it.
    pub failed: u64,
}

/// The compliance report (`GET /v1/reports/compliance`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComplianceReport {
    /// When it was made.
    pub generated_at: Timestamp,
    /// `fail` when any finding failed.
    pub status: FindingStatus,
    /// The window of the period findings.
    pub period: ReportPeriod,
    /// Counts of passed and failed findings.
    pub summary: ComplianceSummary,
    /// Every finding, in the order of [`FINDING_IDS`].
    pub findings: Vec<Finding>,
}

impl ComplianceReport {
    /// The finding with `id`.
    pub fn finding(&self, id: &str) -> Option<&Finding> {
        self.findings.iter().find(|f| f.id == id)
    }
}

fn days(secs: i64) -> i64 {
    secs / DAY
}

/// The ids a finding concerns: every one counted, the first [`MAX_FINDING_ITEMS`] kept,
/// so a report over millions of keys holds no more than that many ids per finding.
#[derive(Default)]
struct Ids {
    count: u64,
    items: Vec<String>,
}

impl Ids {
    fn push(&mut self, id: &str) {
        self.count += 1;
        if self.items.len() < MAX_FINDING_ITEMS {
            self.items.push(id.to_owned());
        }
    }
}

impl<S: AsRef<str>> FromIterator<S> for Ids {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let mut ids = Ids::default();
        for id in iter {
            ids.push(id.as_ref());
        }
        ids
    }
}

/// Builds findings against the settings' thresholds.
struct Findings<'a> {
    settings: &'a ComplianceSettings,
    out: Vec<Finding>,
}

impl Findings<'_> {
    fn add(&mut self, id: &str, title: String, ids: Ids, details: Value) {
        let limit = self.settings.allowed_for(id);
        self.out.push(Finding {
            id: id.to_owned(),
            title,
            status: if ids.count > limit {
                FindingStatus::Fail
            } else {
                FindingStatus::Pass
            },
            count: ids.count,
            limit,
            items_truncated: (ids.items.len() as u64) < ids.count,
            items: ids.items,
            details: match details {
                Value::Object(map) => map,
                _ => Map::new(),
            },
        });
    }
}

/// The ids of the usable keys that each predicate picks.
#[derive(Default)]
struct TokenFindings {
    without_expiry: Ids,
    over_max_age: Ids,
    unused: Ids,
    admin: Ids,
    /// Applications with at least one usable key that has no allow-list of its own.
    open_apps: BTreeSet<String>,
    usable: u64,
}

impl Kms {
    /// The compliance report (`audit.read`; callers of the system application only, as
    /// it covers every application, the signing keys and the whole audit chain). Reads
    /// every application, key, user and the period's security events: a report, not a
    /// request for every second.
    pub fn compliance_report(
        &self,
        caller: &Caller,
        settings: &ComplianceSettings,
    ) -> Result<ComplianceReport> {
        let snapshot = self.snapshot()?;
        caller.require_global(&snapshot, "audit.read")?;
        let now = self.inner.clock.now();
        let mut findings = Findings {
            settings,
            out: Vec::new(),
        };

        let apps = self.all_apps()?;
        let tokens = self.token_findings(&snapshot, &apps, settings, now)?;
        let usable = json!({ "active_tokens": tokens.usable });
        findings.add(
            "tokens_without_expiry",
            "API keys without an expiry".to_owned(),
            tokens.without_expiry,
            usable.clone(),
        );
        findings.add(
            "tokens_over_max_age",
            format!(
                "API keys older than the rotation policy ({} days)",
                days(settings.max_token_age_secs)
            ),
            tokens.over_max_age,
            json!({ "max_age_days": days(settings.max_token_age_secs),
                    "active_tokens": tokens.usable }),
        );
        findings.add(
            "tokens_unused_90d",
            format!("API keys unused for {UNUSED_DAYS} days"),
            tokens.unused,
            json!({ "unused_days": UNUSED_DAYS, "active_tokens": tokens.usable }),
        );
        findings.add(
            "admin_tokens",
            "API keys holding admin, directly or through a role".to_owned(),
            tokens.admin,
            usable,
        );
        findings.add(
            "apps_without_network_allow_list",
            "Applications whose keys work from any network".to_owned(),
            tokens.open_apps.into_iter().collect(),
            json!({ "applications": apps.len() }),
        );

        self.key_findings(&mut findings, now)?;
        self.audit_findings(caller, &mut findings, now)?;
        self.user_findings(&apps, &mut findings, now)?;

        let failed = findings
            .out
            .iter()
            .filter(|f| f.status == FindingStatus::Fail)
            .count() as u64;
        Ok(ComplianceReport {
            generated_at: now,
            status: if failed > 0 {
                FindingStatus::Fail
            } else {
                FindingStatus::Pass
            },
            period: ReportPeriod {
                from: now.plus_secs(-settings.period_secs),
                to: now,
            },
            summary: ComplianceSummary {
                passed: findings.out.len() as u64 - failed,
                failed,
            },
            findings: findings.out,
        })
    }

    fn all_apps(&self) -> Result<Vec<Application>> {
        let mut apps = Vec::new();
        loop {
            let after = apps.last().map(|a: &Application| a.id.clone());
            let page = self.inner.store.list_apps(after.as_deref(), PAGE)?;
            let done = page.len() < PAGE;
            apps.extend(page);
            if done {
                return Ok(apps);
            }
        }
    }

    /// Walks every usable key (not revoked, not expired) of every application once.
    fn token_findings(
        &self,
        snapshot: &PermissionSnapshot,
        apps: &[Application],
        settings: &ComplianceSettings,
        now: Timestamp,
    ) -> Result<TokenFindings> {
        let too_old = now.plus_secs(-settings.max_token_age_secs);
        let unused_since = now.plus_secs(-UNUSED_DAYS * DAY);
        let mut out = TokenFindings::default();
        for app in apps {
            let mut after: Option<String> = None;
            loop {
                let page = self
                    .inner
                    .store
                    .list_tokens(&app.id, after.as_deref(), PAGE)?;
                after = page.last().map(|t| t.id.clone());
                let done = page.len() < PAGE;
                for t in page
                    .iter()
                    .filter(|t| t.status == TokenStatus::Active && !t.is_expired(now))
                {
                    out.usable += 1;
                    if t.expires_at.is_none() {
                        out.without_expiry.push(&t.id);
                    }
                    if t.created_at < too_old {
                        out.over_max_age.push(&t.id);
                    }
                    if last_activity(t) < unused_since {
                        out.unused.push(&t.id);
                    }
                    let scopes =
                        t.scopes
                            .iter()
                            .chain(t.grants.iter().filter_map(|g| match &g.target {
                                GrantTarget::Scope(s) => Some(s),
                                GrantTarget::Role(_) => None,
                            }));
                    let roles =
                        t.roles
                            .iter()
                            .chain(t.grants.iter().filter_map(|g| match &g.target {
                                GrantTarget::Role(r) => Some(r),
                                GrantTarget::Scope(_) => None,
                            }));
                    // A conditional admin grant counts: it holds admin whenever it holds.
                    if snapshot.effective(scopes, roles).is_admin() {
                        out.admin.push(&t.id);
                    }
                    if app.security.ip_allow.is_empty() && t.limits.ip_allow.is_empty() {
                        out.open_apps.insert(app.id.clone());
                    }
                }
                if done {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn key_findings(&self, findings: &mut Findings<'_>, now: Timestamp) -> Result<()> {
        let settings = findings.settings;
        let max_days = days(settings.max_signing_key_age_secs);
        let active: Vec<_> = self
            .inner
            .store
            .list_signing_keys()?
            .into_iter()
            .filter(|k| k.state == KeyState::Active)
            .collect();
        let newest = active.iter().max_by_key(|k| k.created_at);
        let old: Ids = active
            .iter()
            .filter(|k| k.created_at < now.plus_secs(-settings.max_signing_key_age_secs))
            .map(|k| k.kid.clone())
            .collect();
        findings.add(
            "signing_key_age",
            format!("Active signing key older than {max_days} days"),
            old,
            json!({
                "max_age_days": max_days,
                "active_key": newest.map(|k| k.kid.clone()),
                "age_days": newest.map(|k| days(now.unix() - k.created_at.unix())),
            }),
        );

        let max_days = days(settings.max_master_key_age_secs);
        let (set_at, source) = match self.master_key_set_at_raw()? {
            Some((v, source)) => (Timestamp::parse_rfc3339(&v).ok(), source),
            None => (None, super::INITIALIZED_KEY),
        };
        let old = set_at
            .filter(|at| *at < now.plus_secs(-settings.max_master_key_age_secs))
            .map(|_| Ids::from_iter(["master_key"]))
            .unwrap_or_default();
        findings.add(
            "master_key_age",
            format!("Master key older than {max_days} days"),
            old,
            json!({
                "max_age_days": max_days,
                "set_at": set_at,
                "set_at_source": set_at.map(|_| source),
                "age_days": set_at.map(|at| days(now.unix() - at.unix())),
            }),
        );
        Ok(())
    }

    fn audit_findings(
        &self,
        caller: &Caller,
        findings: &mut Findings<'_>,
        now: Timestamp,
    ) -> Result<()> {
        let settings = findings.settings;
        let (items, details) = match self.verify_audit(caller)? {
            AuditVerification::Intact { events, .. } => {
                (Ids::default(), json!({ "ok": true, "events": events }))
            }
            AuditVerification::Broken { first_bad_seq, .. } => (
                Ids::from_iter([first_bad_seq.to_string()]),
                json!({ "ok": false, "first_bad_seq": first_bad_seq }),
            ),
        };
        findings.add(
            "audit_chain",
            "Audit chain intact (no event altered or removed)".to_owned(),
            items,
            details,
        );

        let min_days = days(settings.min_audit_retention_secs);
        let short = settings
            .audit_retention_secs
            .is_some_and(|r| r < settings.min_audit_retention_secs);
        findings.add(
            "audit_retention",
            format!("Audit events kept at least {min_days} days"),
            if short {
                Ids::from_iter(["audit_retention"])
            } else {
                Ids::default()
            },
            json!({
                "min_audit_retention_days": min_days,
                "audit_retention_days": settings.audit_retention_secs.map(days),
                "expired_token_retention_days": settings.expired_token_retention_secs.map(days),
                "session_retention_days": settings.session_retention_secs.map(days),
                "usage_retention_days": settings.usage_retention_secs.map(days),
            }),
        );

        let since = now.plus_secs(-settings.period_secs);
        for (id, action, title) in [
            ("lockouts", "security.lockout", "Lockouts in the period"),
            (
                "refresh_token_reuse",
                "refresh.reuse",
                "Refresh-token reuse in the period (families revoked)",
            ),
        ] {
            let (events, targets) = self.events_since(action, since)?;
            findings.add(
                id,
                title.to_owned(),
                targets.into_iter().collect(),
                json!({ "events": events, "action": action,
                        "period_days": days(settings.period_secs) }),
            );
        }
        Ok(())
    }

    /// How many `action` events were recorded at or after `since`, and their distinct
    /// targets.
    fn events_since(&self, action: &str, since: Timestamp) -> Result<(u64, BTreeSet<String>)> {
        let mut events = 0;
        let mut targets = BTreeSet::new();
        let mut before_seq = None;
        loop {
            let page = self.inner.store.list_audit(&AuditQuery {
                before_seq,
                action: Some(action.to_owned()),
                actor: None,
                since: Some(since),
                app_id: None,
                limit: PAGE,
            })?;
            before_seq = page.last().map(|e| e.seq);
            events += page.len() as u64;
            let done = page.len() < PAGE;
            targets.extend(page.into_iter().map(|e| e.target));
            if done {
                return Ok((events, targets));
            }
        }
    }

    fn user_findings(
        &self,
        apps: &[Application],
        findings: &mut Findings<'_>,
        now: Timestamp,
    ) -> Result<()> {
        let cutoff = now.plus_secs(-UNUSED_DAYS * DAY);
        let mut idle = Ids::default();
        let mut active_users = 0u64;
        for app in apps {
            let mut after: Option<String> = None;
            loop {
                let page = self
                    .inner
                    .store
                    .list_users(&app.id, after.as_deref(), PAGE)?;
                after = page.last().map(|u| u.id.clone());
                let done = page.len() < PAGE;
                for u in page.iter().filter(|u| u.status == UserStatus::Active) {
                    active_users += 1;
                    if u.last_login_at.unwrap_or(u.created_at) < cutoff {
                        idle.push(&u.id);
                    }
                }
                if done {
                    break;
                }
            }
        }
        findings.add(
            "users_without_login_90d",
            format!("Users without a login in {UNUSED_DAYS} days"),
            idle,
            json!({ "unused_days": UNUSED_DAYS, "active_users": active_users }),
        );
        Ok(())
    }
}

/// When a key was last used, or created when it never was.
fn last_activity(t: &TokenRecord) -> Timestamp {
    t.last_used_at.unwrap_or(t.created_at)
}
