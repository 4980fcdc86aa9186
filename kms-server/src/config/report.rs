//! The compliance report's thresholds (`report_*` settings) and the retention settings it
//! reports, resolved for `kms serve` and `kms report compliance` alike.

use std::collections::BTreeMap;
use std::time::Duration;

use kms_core::{ComplianceSettings, FINDING_IDS};

use super::parse::{parse_whole_seconds, parse_whole_seconds_or_zero};
use super::settings::{
    Setting, AUDIT_RETENTION, EXPIRED_TOKEN_RETENTION, REPORT_MAX_MASTER_KEY_AGE,
    REPORT_MAX_SIGNING_KEY_AGE, REPORT_MAX_TOKEN_AGE, REPORT_MIN_AUDIT_RETENTION, REPORT_PERIOD,
    REPORT_THRESHOLDS, SESSION_RETENTION, USAGE_RETENTION,
};
use super::{ConfigError, Sources};

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// `admin_tokens=1,tokens_without_expiry=5`: how many items each named finding may count.
fn parse_thresholds(s: &str) -> Result<BTreeMap<String, u64>, String> {
    let mut out = BTreeMap::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((id, n)) = pair.split_once('=') else {
            return Err(format!("expected FINDING=N, got {pair:?}"));
        };
        let id = id.trim();
        if !FINDING_IDS.contains(&id) {
            return Err(format!(
                "{id:?} is not a finding; the findings are {}",
                FINDING_IDS.join(", ")
            ));
        }
        let n = n
            .trim()
            .parse::<u64>()
            .map_err(|_| format!("the threshold of {id} must be a whole number, got {n:?}"))?;
        if out.insert(id.to_owned(), n).is_some() {
            return Err(format!("{id} is given twice"));
        }
    }
    Ok(out)
}

/// The report's settings from `sources`.
pub fn resolve_report(sources: &Sources) -> Result<ComplianceSettings, ConfigError> {
    let defaults = ComplianceSettings::default();
    let age = |setting: Setting, default: i64| -> Result<i64, ConfigError> {
        let default = Duration::from_secs(u64::try_from(default).unwrap_or(0));
        Ok(secs(sources.get(setting, parse_whole_seconds, default)?))
    };
    let retention = |setting: Setting, default: Option<i64>| -> Result<Option<i64>, ConfigError> {
        let default = Duration::from_secs(default.and_then(|d| u64::try_from(d).ok()).unwrap_or(0));
        let d = sources.get(setting, parse_whole_seconds_or_zero, default)?;
        Ok((!d.is_zero()).then(|| secs(d)))
    };
    Ok(ComplianceSettings {
        max_token_age_secs: age(REPORT_MAX_TOKEN_AGE, defaults.max_token_age_secs)?,
        max_signing_key_age_secs: age(
            REPORT_MAX_SIGNING_KEY_AGE,
            defaults.max_signing_key_age_secs,
        )?,
        max_master_key_age_secs: age(REPORT_MAX_MASTER_KEY_AGE, defaults.max_master_key_age_secs)?,
        period_secs: age(REPORT_PERIOD, defaults.period_secs)?,
        min_audit_retention_secs: age(
            REPORT_MIN_AUDIT_RETENTION,
            defaults.min_audit_retention_secs,
        )?,
        audit_retention_secs: retention(AUDIT_RETENTION, None)?,
        expired_token_retention_secs: retention(EXPIRED_TOKEN_RETENTION, None)?,
        session_retention_secs: retention(SESSION_RETENTION, None)?,
        usage_retention_secs: retention(USAGE_RETENTION, defaults.usage_retention_secs)?,
        allowed: sources.get(REPORT_THRESHOLDS, parse_thresholds, defaults.allowed)?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn thresholds_name_known_findings_once_with_whole_numbers() {
        let t = parse_thresholds(" admin_tokens=2, tokens_without_expiry = 5 ").unwrap();
        assert_eq!(t["admin_tokens"], 2);
        assert_eq!(t["tokens_without_expiry"], 5);
        assert!(parse_thresholds("").unwrap().is_empty());
        assert!(parse_thresholds("nonsense=1")
            .unwrap_err()
            .contains("not a finding"));
        assert!(parse_thresholds("admin_tokens").is_err());
        assert!(parse_thresholds("admin_tokens=-1").is_err());
        assert!(parse_thresholds("admin_tokens=1,admin_tokens=2").is_err());
    }

    #[test]
    fn the_documented_default_is_the_cores_default() {
        assert_eq!(
            parse_thresholds("admin_tokens=1").unwrap(),
            ComplianceSettings::default().allowed
        );
    }
}
