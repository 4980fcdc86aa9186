//! Usage analytics: every verification counted per token and per application, by outcome
//! code, in hourly buckets (ADR 0015).
//!
//! Counting happens in memory on the hot path — an atomic add in a handle the cached key
//! holds, no lock, no allocation — and a flush the server runs every few seconds drains
//! the counters into the store, which adds them (`count = count + n`) so that any number
//! of nodes sum into the same buckets. This module holds the pure parts: the counters,
//! what a flush hands the store, the query window, the report and its cost.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::kms::VerifyCode;

/// Length of a stored bucket: one hour.
pub const BUCKET_SECS: i64 = 3600;
/// Length of a day bucket in a report.
const DAY_SECS: i64 = 24 * BUCKET_SECS;
/// Most buckets one report may span (hours or days).
pub const MAX_BUCKETS: i64 = 1000;
/// `last_used_at` is kept to the minute, so it is written at most once a minute per token.
pub(crate) const LAST_USE_GRANULARITY_SECS: i64 = 60;

/// Added to one stored bucket: `count` verifications of `token_id` (of `app_id`) with
/// outcome `code` in the hour starting at `bucket_start`. `token_id` is empty for
/// credentials that are not API keys (users' sessions), counted for their application only.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UsageCount {
    /// The application.
    pub app_id: String,
    /// The API key, or empty.
    pub token_id: String,
    /// Start of the hour (a multiple of [`BUCKET_SECS`]).
    pub bucket_start: Timestamp,
    /// The outcome code (`VALID`, `REVOKED`, ...).
    pub code: String,
    /// How many to add.
    pub count: u64,
}

/// A token's last use, to raise its `last_used_at` to (never lower it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenTouch {
    /// The token.
    pub token_id: String,
    /// When it was used, to the minute.
    pub at: Timestamp,
}

/// Whose usage a read is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageSubject<'a> {
    /// Every verification of the application's credentials.
    App(&'a str),
    /// Every verification of one API key.
    Token(&'a str),
}

/// A stored hourly total of one subject and code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    /// Start of the hour.
    pub bucket_start: Timestamp,
    /// The outcome code.
    pub code: String,
    /// The count.
    pub count: u64,
}

/// The bucket size of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    /// One bucket per hour (UTC).
    Hour,
    /// One bucket per day (UTC).
    Day,
}

impl Granularity {
    /// The bucket length.
    pub fn secs(self) -> i64 {
        match self {
            Granularity::Hour => BUCKET_SECS,
            Granularity::Day => DAY_SECS,
        }
    }

    /// The default span of a report ending at `to`: 24 hours, or 30 days.
    fn default_span(self) -> i64 {
        match self {
            Granularity::Hour => DAY_SECS,
            Granularity::Day => 30 * DAY_SECS,
        }
    }
}

/// A usage query as it arrives (`?from=&to=&granularity=`), unvalidated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// Start (RFC 3339); default `to` minus 24 hours (hour) or 30 days (day).
    #[serde(default)]
    pub from: Option<String>,
    /// End (RFC 3339, exclusive); default now.
    #[serde(default)]
    pub to: Option<String>,
    /// `hour` (default) or `day`.
    #[serde(default)]
    pub granularity: Option<String>,
}

/// A validated report period: whole buckets from `from` (inclusive) to `to` (exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageWindow {
    /// The bucket size.
    pub granularity: Granularity,
    /// Start of the first bucket.
    pub from: Timestamp,
    /// End of the last bucket.
    pub to: Timestamp,
}

impl UsageWindow {
    /// Validates `q` at `now`. `from` is rounded down and `to` up to whole buckets (UTC);
    /// the period must be non-empty (`from` before `to`) and at most [`MAX_BUCKETS`] long.
    pub fn parse(q: &UsageQuery, now: Timestamp) -> Result<Self> {
        let granularity = match q.granularity.as_deref() {
            None | Some("hour") => Granularity::Hour,
            Some("day") => Granularity::Day,
            Some(_) => return Err(Error::invalid("granularity", "must be \"hour\" or \"day\"")),
        };
        let time = |field: &str, value: &str| {
            Timestamp::parse_rfc3339(value).map_err(|_| {
                Error::invalid(
                    field,
                    "must be an RFC 3339 date-time such as 2026-12-01T00:00:00Z",
                )
            })
        };
        let to = match q.to.as_deref() {
            Some(t) => time("to", t)?,
            None => now,
        };
        let from = match q.from.as_deref() {
            Some(f) => time("from", f)?,
            None => to.plus_secs(-granularity.default_span()),
        };
        if from >= to {
            return Err(Error::invalid("from", "must be before to"));
        }
        let size = granularity.secs();
        let start = from.unix().div_euclid(size).saturating_mul(size);
        let end = to
            .unix()
            .div_euclid(size)
            .saturating_add(i64::from(to.unix().rem_euclid(size) != 0))
            .saturating_mul(size);
        let buckets = (end - start) / size;
        if buckets > MAX_BUCKETS {
            return Err(Error::invalid(
                "from",
                format!(
                    "the period spans {buckets} buckets; at most {MAX_BUCKETS} are allowed \
                     (use a shorter period or granularity=day)"
                ),
            ));
        }
        Ok(UsageWindow {
            granularity,
            from: Timestamp::from_unix(start),
            to: Timestamp::from_unix(end),
        })
    }

    /// The equally long period just before this one, for the trend.
    pub fn previous(&self) -> UsageWindow {
        let span = self.to.unix() - self.from.unix();
        UsageWindow {
            granularity: self.granularity,
            from: self.from.plus_secs(-span),
            to: self.from,
        }
    }
}

/// One bucket of a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageBucket {
    /// Start of the bucket.
    pub start: Timestamp,
    /// Every verification in it.
    pub total: u64,
    /// By outcome code (codes with none left out).
    pub by_code: BTreeMap<String, u64>,
}

/// The totals of a report's period.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UsageTotals {
    /// Every verification in the period.
    pub total: u64,
    /// By outcome code.
    pub by_code: BTreeMap<String, u64>,
}

/// The period compared with the one just before it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageTrend {
    /// Every verification in the equally long period just before `from`.
    pub previous_period_total: u64,
    /// `(total - previous) / previous`; null when the previous period had none.
    pub change_ratio: Option<f64>,
}

/// What a period cost: the application's price per thousand valid verifications.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageCost {
    /// Valid verifications in the period.
    pub billable_units: u64,
    /// `billable_units / 1000 × per_thousand`, exact (a decimal string).
    pub amount: String,
    /// The price's currency.
    pub currency: String,
}

/// A usage report, exactly as `GET /v1/apps/{id}/usage` and `GET /v1/tokens/{id}/usage`
/// answer it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageReport {
    /// `hour` or `day`.
    pub granularity: Granularity,
    /// Every bucket of the period, oldest first, empty ones included.
    pub series: Vec<UsageBucket>,
    /// The period's totals.
    pub totals: UsageTotals,
    /// Against the period before.
    pub trend: UsageTrend,
    /// For an application with a usage price: what the period cost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<UsageCost>,
}

impl UsageReport {
    /// Builds the report of `window` from the stored hourly rows of the period and of the
    /// period before it (rows outside either are ignored).
    pub fn build(
        window: &UsageWindow,
        rows: &[UsageRow],
        previous: &[UsageRow],
        price: Option<&UsagePrice>,
    ) -> Self {
        let size = window.granularity.secs();
        let count = ((window.to.unix() - window.from.unix()) / size).clamp(0, MAX_BUCKETS);
        let mut series: Vec<UsageBucket> = (0..count)
            .map(|i| UsageBucket {
                start: window.from.plus_secs(i * size),
                total: 0,
                by_code: BTreeMap::new(),
            })
            .collect();
        let mut totals = UsageTotals::default();
        for row in rows {
            let offset = row.bucket_start.unix() - window.from.unix();
            if offset < 0 || row.bucket_start >= window.to {
                continue;
            }
            let Some(bucket) = usize::try_from(offset / size)
                .ok()
                .and_then(|i| series.get_mut(i))
            else {
                continue;
            };
            bucket.total = bucket.total.saturating_add(row.count);
            let n = bucket.by_code.entry(row.code.clone()).or_default();
            *n = n.saturating_add(row.count);
            totals.total = totals.total.saturating_add(row.count);
            let n = totals.by_code.entry(row.code.clone()).or_default();
            *n = n.saturating_add(row.count);
        }
        let before = window.previous();
        let previous_period_total = previous
            .iter()
            .filter(|r| r.bucket_start >= before.from && r.bucket_start < before.to)
            .fold(0u64, |sum, r| sum.saturating_add(r.count));
        let change_ratio = (previous_period_total > 0).then(|| {
            (totals.total as f64 - previous_period_total as f64) / previous_period_total as f64
        });
        let cost = price.map(|p| {
            let billable_units = totals
                .by_code
                .get(VerifyCode::Valid.as_str())
                .copied()
                .unwrap_or(0);
            UsageCost {
                billable_units,
                amount: p.amount_for(billable_units),
                currency: p.currency.clone(),
            }
        });
        UsageReport {
            granularity: window.granularity,
            series,
            totals,
            trend: UsageTrend {
                previous_period_total,
                change_ratio,
            },
            cost,
        }
    }
}

/// Decimal places a price may have.
const PRICE_DECIMALS: u32 = 6;
/// Highest price per thousand, in whole units.
const MAX_PRICE_UNITS: u64 = 1_000_000_000;

/// An application's price per thousand valid verifications, in exact decimal: integer
/// millionths of the currency unit, never floating point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "UsagePriceInput", into = "UsagePriceInput")]
pub struct UsagePrice {
    /// The price per thousand in millionths of the unit (`0.40` is 400,000).
    pub per_thousand_micros: u64,
    /// ISO 4217 code (three capital letters).
    pub currency: String,
}

/// A usage price as written (`{"per_thousand": "0.40", "currency": "EUR"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsagePriceInput {
    /// Price per thousand valid verifications, a decimal string with at most 6 decimals.
    pub per_thousand: String,
    /// ISO 4217 currency code, e.g. `EUR`.
    pub currency: String,
}

impl TryFrom<UsagePriceInput> for UsagePrice {
    type Error = String;
    fn try_from(input: UsagePriceInput) -> std::result::Result<Self, String> {
        UsagePrice::parse(&input.per_thousand, &input.currency)
    }
}

impl From<UsagePrice> for UsagePriceInput {
    fn from(p: UsagePrice) -> Self {
        UsagePriceInput {
            per_thousand: format_decimal(u128::from(p.per_thousand_micros), PRICE_DECIMALS),
            currency: p.currency,
        }
    }
}

impl UsagePrice {
    /// Parses `per_thousand` (`"0.40"`: digits, optionally a point and at most 6 more) and
    /// `currency` (three capital letters). The message says what is wrong.
    pub fn parse(per_thousand: &str, currency: &str) -> std::result::Result<Self, String> {
        let bad = || {
            format!(
                "per_thousand must be a decimal number such as \"0.40\" with at most \
                 {PRICE_DECIMALS} decimals, from 0 to {MAX_PRICE_UNITS}"
            )
        };
        let (whole, fraction) = per_thousand.split_once('.').unwrap_or((per_thousand, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || whole.len() > 10
            || !digits(whole)
            || !digits(fraction)
            || fraction.len() > PRICE_DECIMALS as usize
            || (per_thousand.contains('.') && fraction.is_empty())
        {
            return Err(bad());
        }
        let whole: u64 = whole.parse().map_err(|_| bad())?;
        if whole > MAX_PRICE_UNITS {
            return Err(bad());
        }
        let mut micros = 0u64;
        for (i, b) in fraction.bytes().enumerate() {
            micros += u64::from(b - b'0') * 10u64.pow(PRICE_DECIMALS - 1 - i as u32);
        }
        let per_thousand_micros = whole * 10u64.pow(PRICE_DECIMALS) + micros;
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(
                "currency must be an ISO 4217 code of three capital letters, \
                        such as \"EUR\""
                    .to_owned(),
            );
        }
        Ok(UsagePrice {
            per_thousand_micros,
            currency: currency.to_owned(),
        })
    }

    /// The exact amount for `units` valid verifications: `units × per_thousand / 1000`,
    /// as a decimal string with at least two decimals (`"0.4936"`, `"12.00"`).
    pub fn amount_for(&self, units: u64) -> String {
        // units × micros per thousand = billionths of the unit, exact in u128.
        let nanos = u128::from(units) * u128::from(self.per_thousand_micros);
        format_decimal(nanos, PRICE_DECIMALS + 3)
    }
}

/// `value × 10^-decimals` as a decimal string, trailing zeros trimmed to two decimals.
fn format_decimal(value: u128, decimals: u32) -> String {
    let scale = 10u128.pow(decimals);
    let mut fraction = format!("{:0width$}", value % scale, width = decimals as usize);
    while fraction.len() > 2 && fraction.ends_with('0') {
        fraction.pop();
    }
    format!("{}.{fraction}", value / scale)
}

/// The slot of a code in a counter array.
fn code_slot(code: VerifyCode) -> usize {
    // `VerifyCode::ALL` lists the codes in declaration order (a test proves it).
    code as usize
}

/// Counts of one hour of one handle.
#[derive(Debug, Default)]
struct HourSlot {
    /// Which hour (unix seconds / 3600) the counts are for.
    hour: AtomicI64,
    counts: [AtomicU64; VerifyCode::ALL.len()],
}

/// The in-memory counters of one API key (or of an application's sessions): two hour
/// slots, so counts are filed under the hour they happened in even when a flush runs just
/// after the hour turned, and the last use seen.
#[derive(Debug)]
pub(crate) struct UsageHandle {
    app_id: String,
    token_id: String,
    slots: [HourSlot; 2],
    /// The last use seen by this process, to the minute (unix seconds); 0: none.
    last_used: AtomicI64,
    /// The last use handed to the store; 0: none.
    flushed_use: AtomicI64,
}

impl UsageHandle {
    /// Counts one verification with outcome `code` at `now`: a few relaxed atomic
    /// operations on memory this handle owns.
    pub(crate) fn count(&self, code: VerifyCode, now: Timestamp) {
        let hour = now.unix().div_euclid(BUCKET_SECS);
        let slot = &self.slots[(hour & 1) as usize];
        if slot.hour.load(Ordering::Relaxed) != hour {
            // The first count of a new hour in this slot; the flush emptied the counts of
            // two hours ago long since (it runs every few seconds).
            slot.hour.store(hour, Ordering::Relaxed);
        }
        slot.counts[code_slot(code)].fetch_add(1, Ordering::Relaxed);
    }

    /// Records a verification with `code` at `now`: counted when `count` (verifications,
    /// not management calls), and a use of the key noted when it was valid.
    pub(crate) fn record(&self, code: VerifyCode, now: Timestamp, count: bool) {
        if count {
            self.count(code, now);
        }
        if code == VerifyCode::Valid {
            self.note_use(now);
        }
    }

    /// Notes a use of the key at `now`, kept to the minute. Sessions are not noted here
    /// (they record their own use).
    pub(crate) fn note_use(&self, now: Timestamp) {
        if self.token_id.is_empty() {
            return;
        }
        let minute = now.unix() - now.unix().rem_euclid(LAST_USE_GRANULARITY_SECS);
        if self.last_used.load(Ordering::Relaxed) < minute {
            self.last_used.fetch_max(minute, Ordering::Relaxed);
        }
    }

    /// Moves the counts out (to zero) into `out`, and the last use, when newer than the one
    /// flushed, into `touches`.
    fn drain(&self, out: &mut HashMap<CountKey, u64>, touches: &mut HashMap<String, i64>) {
        for slot in &self.slots {
            let hour = slot.hour.load(Ordering::Relaxed);
            for (counter, code) in slot.counts.iter().zip(VerifyCode::ALL) {
                let n = counter.swap(0, Ordering::Relaxed);
                if n == 0 {
                    continue;
                }
                let code = code.as_str();
                let key = CountKey {
                    app_id: self.app_id.clone(),
                    token_id: self.token_id.clone(),
                    hour,
                    code,
                };
                let total = out.entry(key).or_default();
                *total = total.saturating_add(n);
            }
        }
        let used = self.last_used.load(Ordering::Relaxed);
        if used > self.flushed_use.fetch_max(used, Ordering::Relaxed) {
            let at = touches.entry(self.token_id.clone()).or_default();
            *at = (*at).max(used);
        }
    }

    fn is_idle(&self) -> bool {
        self.slots
            .iter()
            .all(|s| s.counts.iter().all(|c| c.load(Ordering::Relaxed) == 0))
            && self.last_used.load(Ordering::Relaxed) <= self.flushed_use.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CountKey {
    app_id: String,
    token_id: String,
    hour: i64,
    code: &'static str,
}

/// What a flush hands the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageBatch {
    /// Counts to add, one per (application, token, hour, code).
    pub counts: Vec<UsageCount>,
    /// Last uses to record.
    pub touches: Vec<TokenTouch>,
}

impl UsageBatch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty() && self.touches.is_empty()
    }

    /// How many verifications the batch counts.
    pub fn verifications(&self) -> u64 {
        self.counts
            .iter()
            .fold(0u64, |sum, c| sum.saturating_add(c.count))
    }
}

/// Every handle of the process, and what a failed flush could not write.
#[derive(Debug, Default)]
pub(crate) struct UsageCounters {
    handles: Mutex<HashMap<(String, String), Arc<UsageHandle>>>,
    /// Drained by a flush the store refused: written by the next one.
    pending: Mutex<(HashMap<CountKey, u64>, HashMap<String, i64>)>,
}

impl UsageCounters {
    /// The handle of `token_id` (empty for sessions) of `app_id`, shared by every cached
    /// key of it.
    pub(crate) fn handle(&self, app_id: &str, token_id: &str) -> Arc<UsageHandle> {
        let mut handles = self.handles.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            handles
                .entry((app_id.to_owned(), token_id.to_owned()))
                .or_insert_with(|| {
                    Arc::new(UsageHandle {
                        app_id: app_id.to_owned(),
                        token_id: token_id.to_owned(),
                        slots: Default::default(),
                        last_used: AtomicI64::new(0),
                        flushed_use: AtomicI64::new(0),
                    })
                }),
        )
    }

    /// Drains every handle (and what an earlier flush left pending) into one batch, and
    /// forgets handles no cached key holds any more that have nothing left to write.
    pub(crate) fn drain(&self) -> UsageBatch {
        let (mut counts, mut touches) =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        {
            let mut handles = self.handles.lock().unwrap_or_else(PoisonError::into_inner);
            for handle in handles.values() {
                handle.drain(&mut counts, &mut touches);
            }
            // A handle only this map holds cannot be counted into any more: no key can
            // reach it without taking the lock held here.
            handles.retain(|_, h| Arc::strong_count(h) > 1 || !h.is_idle());
        }
        let mut batch = UsageBatch {
            counts: counts
                .into_iter()
                .map(|(k, count)| UsageCount {
                    app_id: k.app_id,
                    token_id: k.token_id,
                    bucket_start: Timestamp::from_unix(k.hour.saturating_mul(BUCKET_SECS)),
                    code: k.code.to_owned(),
                    count,
                })
                .collect(),
            touches: touches
                .into_iter()
                .map(|(token_id, at)| TokenTouch {
                    token_id,
                    at: Timestamp::from_unix(at),
                })
                .collect(),
        };
        batch.counts.sort();
        batch.touches.sort_by(|a, b| a.token_id.cmp(&b.token_id));
        batch
    }

    /// Keeps a batch the store refused for the next flush.
    pub(crate) fn restore(&self, batch: UsageBatch) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        for c in batch.counts {
            let Some(code) = VerifyCode::ALL
                .iter()
                .map(|v| v.as_str())
                .find(|s| *s == c.code)
            else {
                continue;
            };
            let key = CountKey {
                app_id: c.app_id,
                token_id: c.token_id,
                hour: c.bucket_start.unix().div_euclid(BUCKET_SECS),
                code,
            };
            let total = pending.0.entry(key).or_default();
            *total = total.saturating_add(c.count);
        }
        for t in batch.touches {
            let at = pending.1.entry(t.token_id).or_default();
            *at = (*at).max(t.at.unix());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn every_code_has_its_own_slot_in_declaration_order() {
        for (i, code) in VerifyCode::ALL.into_iter().enumerate() {
            assert_eq!(code_slot(code), i, "{code:?}");
        }
    }

    #[test]
    fn prices_are_exact_decimals() {
        let p = UsagePrice::parse("0.40", "EUR").unwrap();
        assert_eq!(p.per_thousand_micros, 400_000);
        assert_eq!(p.amount_for(1234), "0.4936");
        assert_eq!(p.amount_for(0), "0.00");
        assert_eq!(p.amount_for(30_000), "12.00");
        let tiny = UsagePrice::parse("0.000001", "USD").unwrap();
        assert_eq!(tiny.amount_for(1), "0.000000001");
        let big = UsagePrice::parse("1000000000", "USD").unwrap();
        assert_eq!(big.amount_for(u64::MAX), "18446744073709551615000000.00");
        for bad in [
            "",
            ".4",
            "1.",
            "-1",
            "1e3",
            "0.1234567",
            "1000000001",
            " 1",
            "0,4",
        ] {
            assert!(UsagePrice::parse(bad, "EUR").is_err(), "{bad:?}");
        }
        for bad in ["eur", "EURO", "E1R", ""] {
            assert!(UsagePrice::parse("1", bad).is_err(), "{bad:?}");
        }
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"per_thousand": "0.40", "currency": "EUR"})
        );
        let back: UsagePrice = serde_json::from_value(json).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn windows_cover_whole_buckets_with_defaults() {
        let now = t("2026-12-01T10:30:00Z");
        let w = UsageWindow::parse(&UsageQuery::default(), now).unwrap();
        assert_eq!(w.granularity, Granularity::Hour);
        assert_eq!(w.from, t("2026-11-30T10:00:00Z"));
        assert_eq!(w.to, t("2026-12-01T11:00:00Z"));
        let q = UsageQuery {
            granularity: Some("day".into()),
            ..Default::default()
        };
        let w = UsageWindow::parse(&q, now).unwrap();
        assert_eq!(w.from, t("2026-11-01T00:00:00Z"));
        assert_eq!(w.to, t("2026-12-02T00:00:00Z"));
        assert_eq!(w.previous().to, w.from);
        assert_eq!(w.previous().from, t("2026-10-01T00:00:00Z"));
    }

    #[test]
    fn bad_windows_are_refused() {
        let now = t("2026-12-01T10:30:00Z");
        let q = |from: &str, to: &str, g: &str| UsageQuery {
            from: Some(from.into()),
            to: Some(to.into()),
            granularity: Some(g.into()),
        };
        for bad in [
            q("2026-12-01T10:00:00Z", "2026-12-01T10:00:00Z", "hour"),
            q("2026-12-02T00:00:00Z", "2026-12-01T00:00:00Z", "hour"),
            q("yesterday", "2026-12-01T00:00:00Z", "hour"),
            q("2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z", "week"),
            q("2020-01-01T00:00:00Z", "2026-12-01T00:00:00Z", "hour"),
        ] {
            assert!(UsageWindow::parse(&bad, now).is_err(), "{bad:?}");
        }
        assert!(UsageWindow::parse(
            &q("2020-01-01T00:00:00Z", "2022-01-01T00:00:00Z", "day"),
            now
        )
        .is_ok());
    }

    #[test]
    fn handles_count_by_hour_and_drain_to_zero() {
        let counters = UsageCounters::default();
        let h = counters.handle("app_1", "tok_1");
        let at = t("2026-12-01T10:59:59Z");
        h.count(VerifyCode::Valid, at);
        h.count(VerifyCode::Valid, at);
        h.count(VerifyCode::Revoked, at.plus_secs(1));
        h.note_use(at);
        let batch = counters.drain();
        assert_eq!(batch.verifications(), 3);
        assert_eq!(
            batch
                .counts
                .iter()
                .map(|c| (c.bucket_start, c.code.as_str(), c.count))
                .collect::<Vec<_>>(),
            [
                (t("2026-12-01T10:00:00Z"), "VALID", 2),
                (t("2026-12-01T11:00:00Z"), "REVOKED", 1)
            ]
        );
        assert_eq!(
            batch.touches,
            [TokenTouch {
                token_id: "tok_1".into(),
                at: t("2026-12-01T10:59:00Z")
            }]
        );
        assert!(counters.drain().is_empty(), "drained to zero");
        counters.restore(batch.clone());
        assert_eq!(counters.drain(), batch, "a refused batch is kept");
        drop(h);
        assert!(counters.drain().is_empty());
        assert!(
            counters.handles.lock().unwrap().is_empty(),
            "idle handles go"
        );
    }

    #[test]
    fn reports_include_empty_buckets_and_the_trend() {
        let w = UsageWindow::parse(
            &UsageQuery {
                from: Some("2026-12-01T00:00:00Z".into()),
                to: Some("2026-12-01T03:00:00Z".into()),
                granularity: None,
            },
            t("2026-12-02T00:00:00Z"),
        )
        .unwrap();
        let row = |at: &str, code: &str, count| UsageRow {
            bucket_start: t(at),
            code: code.into(),
            count,
        };
        let rows = [
            row("2026-12-01T00:00:00Z", "VALID", 3),
            row("2026-12-01T02:00:00Z", "VALID", 1),
            row("2026-12-01T02:00:00Z", "REVOKED", 2),
        ];
        let previous = [row("2026-11-30T22:00:00Z", "VALID", 4)];
        let price = UsagePrice::parse("0.40", "EUR").unwrap();
        let r = UsageReport::build(&w, &rows, &previous, Some(&price));
        assert_eq!(r.series.len(), 3);
        assert_eq!(r.series[1].total, 0);
        assert!(r.series[1].by_code.is_empty());
        assert_eq!(r.totals.total, 6);
        assert_eq!(r.trend.previous_period_total, 4);
        assert_eq!(r.trend.change_ratio, Some(0.5));
        let cost = r.cost.unwrap();
        assert_eq!(cost.billable_units, 4);
        assert_eq!(cost.amount, "0.0016");
        let none = UsageReport::build(&w, &[], &[], None);
        assert_eq!(none.trend.change_ratio, None);
        assert!(none.cost.is_none());
    }
}
