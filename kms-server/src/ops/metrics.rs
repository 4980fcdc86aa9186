//! Prometheus metrics: HTTP requests by route template and status, request latency,
//! verifications by code, verified-key cache hits and misses, and store latency.
//!
//! Labels never carry raw paths, ids or secrets, and every label takes a bounded set of
//! values whatever clients send: routes are the matched templates (`/v1/tokens/{id}`),
//! requests no route matched share the label `unmatched`, and methods other than the nine
//! of RFC 9110 and PATCH share the label `other` (see [`method_label`]).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::http::Method;
use kms_core::store::{
    AppStore, AuditStore, ChangeListener, GrantStore, IdentityStore, IdpRecord, KeyStore,
    LoginAttempt, Mutation, PolicyStore, SessionRecord, Store, TokenStore, UseOutcome, UserRecord,
};
use kms_core::store::{
    AuditQuery, Policy, RefreshRecord, Revocation, SigningKeyRecord, StoreError, TokenRecord,
};
use kms_core::{Application, AuditEvent, Clock as _, Kms, RoleName, Scope};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
}

/// The `method` label of requests with a method no standard names.
pub const OTHER_METHOD: &str = "other";

/// The `method` label of `method`: its name for the standard methods, [`OTHER_METHOD`] for
/// any extension method, so clients cannot mint label values.
pub fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::CONNECT,
        Method::OPTIONS,
        Method::TRACE,
        Method::PATCH,
    ];
    KNOWN
        .iter()
        .find(|known| **known == *method)
        .map_or(OTHER_METHOD, Method::as_str)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs … ~3.3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// Every metric the server keeps, and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_latency: HistogramFamily<RouteLabels>,
    verifications: Family<CodeLabels, Counter>,
    store_latency: HistogramFamily<OperationLabels>,
    store_errors: Family<OperationLabels, Counter>,
    security_events: Family<EventLabels, Counter>,
    alerts: Family<OutcomeLabels, Counter>,
    refused: Family<ReasonLabels, Counter>,
    audit_events: Family<AuditLabels, Counter>,
    sso_logins: Family<LoginLabels, Counter>,
    cache: Arc<CacheCollector>,
    tls_expiry: Arc<OnceLock<i64>>,
    capacity: Arc<std::sync::RwLock<Option<kms_core::CapacityStats>>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuditLabels {
    action: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LoginLabels {
    kind: &'static str,
    outcome: &'static str,
}

/// Longest action name counted as itself; actions are the code's constants, so this only
/// guards the label set against a future bug.
const MAX_ACTION_LABEL: usize = 48;

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// An empty set of metrics: kms's own under the `kms` prefix, and the standard
    /// process metrics (`process_resident_memory_bytes`, ...) without one.
    pub fn new() -> Self {
        let mut root = Registry::default();
        root.register_collector(Box::new(ProcessCollector::new()));
        let registry = root.sub_registry_with_prefix("kms");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status",
            requests.clone(),
        );
        let request_latency: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template",
            request_latency.clone(),
        );
        let verifications = Family::<CodeLabels, Counter>::default();
        registry.register(
            "verifications",
            "Token verifications answered by POST /v1/verify, by result code",
            verifications.clone(),
        );
        let store_latency: HistogramFamily<OperationLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "store_operation_duration_seconds",
            "Time the store took per operation",
            store_latency.clone(),
        );
        let store_errors = Family::<OperationLabels, Counter>::default();
        registry.register(
            "store_errors",
            "Store operations that failed, by operation",
            store_errors.clone(),
        );
        let security_events = Family::<EventLabels, Counter>::default();
        registry.register(
            "security_events",
            "Security events (lockouts, refresh-token reuse, broken audit chain), by kind",
            security_events.clone(),
        );
        let alerts = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "alerts",
            "Security alerts for the webhook, by outcome (delivered, failed, dropped)",
            alerts.clone(),
        );
        let refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "http_refused",
            "Requests and connections refused before routing, by reason (denied_network, \
             rate_limited, bad_signature, too_many_connections)",
            refused.clone(),
        );
        let audit_events = Family::<AuditLabels, Counter>::default();
        registry.register(
            "audit_events",
            "Changes and security-relevant events recorded in the audit log, by action \
             (token.create, token.revoke, app.update, ...) and outcome",
            audit_events.clone(),
        );
        let sso_logins = Family::<LoginLabels, Counter>::default();
        registry.register(
            "sso_logins",
            "Single sign-on logins by provider kind (oidc, saml) and outcome (success, failure)",
            sso_logins.clone(),
        );
        registry.register_collector(Box::new(BlockingCollector));
        let tls_expiry = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(TlsCollector(tls_expiry.clone())));
        let cache = Arc::new(CacheCollector::default());
        registry.register_collector(Box::new(SharedCollector(cache.clone())));
        let capacity = Arc::new(std::sync::RwLock::new(None));
        registry.register_collector(Box::new(CapacityCollector(capacity.clone())));
        Metrics {
            capacity,
            registry: root,
            audit_events,
            sso_logins,
            tls_expiry,
            requests,
            request_latency,
            verifications,
            store_latency,
            store_errors,
            security_events,
            alerts,
            refused,
            cache,
        }
    }

    /// Keeps `stats` for the capacity gauges (`kms_stored_*`, `kms_database_size_bytes`),
    /// which report the last numbers observed: counting is not done per scrape.
    pub fn observe_capacity(&self, stats: &kms_core::CapacityStats) {
        let mut slot = self
            .capacity
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *slot = Some(stats.clone());
    }

    /// Reports when the served TLS certificate expires (Unix seconds).
    pub fn observe_tls_expiry(&self, not_after: i64) {
        let _ = self.tls_expiry.set(not_after);
    }

    /// Counts one login through an identity provider, from its audit event.
    fn record_login(&self, event: &AuditEvent) {
        let kind = match event.details.get("idp_kind").and_then(|k| k.as_str()) {
            Some("oidc") => "oidc",
            Some("saml") => "saml",
            _ => "unknown",
        };
        let outcome = if event.outcome == "success" {
            "success"
        } else {
            "failure"
        };
        self.sso_logins
            .get_or_create(&LoginLabels { kind, outcome })
            .inc();
    }

    /// Counts one committed audit event.
    fn record_audit(&self, action: &str, outcome: &str) {
        let bounded = |v: &str| {
            if v.len() <= MAX_ACTION_LABEL
                && v.bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_')
            {
                v.to_owned()
            } else {
                "other".to_owned()
            }
        };
        self.audit_events
            .get_or_create(&AuditLabels {
                action: bounded(action),
                outcome: bounded(outcome),
            })
            .inc();
    }

    /// Reports the verified-key cache statistics of `kms` on each scrape.
    pub fn observe_cache(&self, kms: &Kms) {
        // The first service observed wins; a server observes exactly one.
        let _ = self.cache.kms.set(kms.clone());
    }

    /// Records one answered HTTP request; `route` is the matched route template (or
    /// `unmatched`), never a raw path.
    pub fn record_request(&self, method: &Method, route: &str, status: u16, elapsed: Duration) {
        let method = method_label(method);
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route: route.to_owned(),
                status,
            })
            .inc();
        self.request_latency
            .get_or_create(&RouteLabels {
                method,
                route: route.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Records one verification result code (`VALID`, `NOT_FOUND`, ...).
    pub fn record_verification(&self, code: &str) {
        self.verifications
            .get_or_create(&CodeLabels {
                code: code.to_owned(),
            })
            .inc();
    }

    /// Records one security event of kind `event` (`lockout`, ...).
    pub fn record_security_event(&self, event: &str) {
        self.security_events
            .get_or_create(&EventLabels {
                event: event.to_owned(),
            })
            .inc();
    }

    /// Records the fate of one alert: `delivered`, `failed` (after every retry) or
    /// `dropped` (the queue was full).
    pub fn record_alert(&self, outcome: &'static str) {
        self.alerts.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Records one request or connection refused by a server-wide rule: `denied_network`,
    /// `rate_limited`, `bad_signature` or `too_many_connections`.
    pub fn record_refused(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabels { reason }).inc();
    }

    fn record_store(&self, operation: &'static str, elapsed: Duration, failed: bool) {
        let labels = OperationLabels { operation };
        self.store_latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if failed {
            self.store_errors.get_or_create(&labels).inc();
        }
    }

    /// Encodes every metric in the Prometheus text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// Every metric in the Prometheus text format 0.0.4 ([`TEXT_CONTENT_TYPE`]), for
    /// scrapers that do not ask for OpenMetrics.
    pub fn encode_text(&self) -> Result<String, std::fmt::Error> {
        Ok(openmetrics_to_text(&self.encode()?))
    }
}

/// The content type of the Prometheus text format 0.0.4.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The Prometheus text format of an OpenMetrics exposition. They differ, for what this
/// registry exports, in three ways: a counter's `# HELP` and `# TYPE` name the family
/// (`kms_http_requests`) in OpenMetrics but the sample (`kms_http_requests_total`) in the
/// text format; `# UNIT` lines exist only in OpenMetrics; and so does the final `# EOF`.
pub fn openmetrics_to_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => out.push_str(&line),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Reads the cache statistics of the observed service at scrape time.
#[derive(Default)]
struct CacheCollector {
    kms: OnceLock<Kms>,
}

impl std::fmt::Debug for CacheCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheCollector").finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct SharedCollector(Arc<CacheCollector>);

impl Collector for SharedCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(kms) = self.0.kms.get() else {
            return Ok(());
        };
        let stats = kms.cache_stats();
        let hits = ConstCounter::new(stats.hits);
        hits.encode(encoder.encode_descriptor(
            "cache_hits",
            "Verifications answered from the verified-key cache",
            None,
            hits.metric_type(),
        )?)?;
        let misses = ConstCounter::new(stats.misses);
        misses.encode(encoder.encode_descriptor(
            "cache_misses",
            "Verifications that missed the verified-key cache",
            None,
            misses.metric_type(),
        )?)?;
        let entries = ConstGauge::new(i64::try_from(stats.entries).unwrap_or(i64::MAX));
        entries.encode(encoder.encode_descriptor(
            "cache_entries",
            "Verified keys currently cached",
            None,
            entries.metric_type(),
        )?)?;
        if let Some(created) = kms.active_signing_key_created_at() {
            let age = kms_core::SystemClock
                .now()
                .unix()
                .saturating_sub(created.unix());
            let age = ConstGauge::new(age.max(0));
            age.encode(encoder.encode_descriptor(
                "signing_key_age_seconds",
                "Age of the active access-token signing key (rotate before it grows old)",
                None,
                age.metric_type(),
            )?)?;
        }
        let counters = kms.counter_status();
        let fallbacks = ConstCounter::new(counters.fallbacks);
        fallbacks.encode(encoder.encode_descriptor(
            "limit_fallbacks",
            "Rate-limit, lockout and nonce decisions answered by this node alone because the shared counters (Redis or PostgreSQL) failed",
            None,
            fallbacks.metric_type(),
        )?)?;
        let trips = ConstCounter::new(counters.trips);
        trips.encode(encoder.encode_descriptor(
            "limit_breaker_trips",
            "Times the shared counters failed and this node started counting on its own",
            None,
            trips.metric_type(),
        )?)?;
        // Only nodes with shared counters export it: 0 then always means "counting alone
        // because they fail", never "a single node".
        if counters.backend.is_some() {
            let shared = ConstGauge::new(i64::from(
                counters.state == kms_core::counters::CounterState::Shared,
            ));
            let labels = BackendLabels {
                backend: counters.backend.unwrap_or("none"),
            };
            shared.encode(
                encoder
                    .encode_descriptor(
                        "limits_shared",
                        "1 while rate limits, lockouts and nonces are counted in the shared counters (by backend: redis or postgres), 0 while this node counts on its own",
                        None,
                        shared.metric_type(),
                    )?
                    .encode_family(&labels)?,
            )?;
        }
        Ok(())
    }
}

/// The capacity numbers last observed (nothing before the first refresh).
#[derive(Debug)]
struct CapacityCollector(Arc<std::sync::RwLock<Option<kms_core::CapacityStats>>>);

impl Collector for CapacityCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let Some(stats) = stats else {
            return Ok(());
        };
        let gauges: [(&str, &str, u64); 6] = [
            (
                "stored_applications",
                "Applications stored (the system application included)",
                stats.applications,
            ),
            (
                "stored_tokens",
                "API keys stored, revoked and expired ones included until retention deletes them",
                stats.tokens,
            ),
            ("stored_users", "Users stored", stats.users),
            (
                "stored_sessions",
                "Sessions stored, ended ones included until they are deleted",
                stats.sessions,
            ),
            (
                "stored_audit_events",
                "Audit events stored",
                stats.audit_events,
            ),
            (
                "database_size_bytes",
                "Size of the database on disk (SQLite: file plus write-ahead log; PostgreSQL: pg_database_size)",
                stats.database_bytes,
            ),
        ];
        for (name, help, value) in gauges {
            let g = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        let at = ConstGauge::new(stats.at.unix());
        at.encode(encoder.encode_descriptor(
            "capacity_updated_timestamp_seconds",
            "When the stored_* and database_size_bytes gauges were last counted, in Unix seconds",
            None,
            at.metric_type(),
        )?)?;
        Ok(())
    }
}

/// The TLS certificate's expiry, once known (servers without TLS export nothing).
#[derive(Debug)]
struct TlsCollector(Arc<OnceLock<i64>>);

impl Collector for TlsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(&at) = self.0.get() {
            let g = ConstGauge::new(at);
            g.encode(encoder.encode_descriptor(
                "tls_certificate_expiry_timestamp_seconds",
                "When the served TLS certificate expires, in Unix seconds",
                None,
                g.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

/// The blocking pool's calls at scrape time (see [`crate::http::blocking`]).
#[derive(Debug)]
struct BlockingCollector;

impl Collector for BlockingCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (queued, running) = crate::http::blocking::pool_load();
        let queued = ConstGauge::new(i64::try_from(queued).unwrap_or(i64::MAX));
        queued.encode(encoder.encode_descriptor(
            "blocking_queued",
            "Store and hashing calls waiting for a thread of the blocking pool",
            None,
            queued.metric_type(),
        )?)?;
        let running = ConstGauge::new(i64::try_from(running).unwrap_or(i64::MAX));
        running.encode(encoder.encode_descriptor(
            "blocking_running",
            "Store and hashing calls running on the blocking pool",
            None,
            running.metric_type(),
        )?)?;
        Ok(())
    }
}

/// The standard process metrics, read from `/proc/self` at scrape time (Linux; elsewhere
/// nothing is reported).
#[derive(Debug)]
struct ProcessCollector {
    /// Clock ticks per second of `/proc/self/stat` (USER_HZ, 100 on Linux).
    ticks: f64,
}

impl ProcessCollector {
    fn new() -> Self {
        ProcessCollector { ticks: 100.0 }
    }
}

/// What `/proc/self` says, or `None` where it cannot be read.
#[derive(Debug, Default)]
struct ProcessSample {
    cpu_seconds: Option<f64>,
    start_time_seconds: Option<f64>,
    resident_bytes: Option<i64>,
    virtual_bytes: Option<i64>,
    open_fds: Option<i64>,
    max_fds: Option<i64>,
}

fn read_process(ticks: f64) -> ProcessSample {
    let mut sample = ProcessSample::default();
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name (which may hold spaces), from field 3 on.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
            // utime (14), stime (15), starttime (22), vsize (23), rss pages (24).
            if let (Some(u), Some(s)) = (num(11), num(12)) {
                sample.cpu_seconds = Some((u + s) / ticks);
            }
            let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("btime "))
                    .and_then(|v| v.trim().parse::<f64>().ok())
            });
            if let (Some(start), Some(boot)) = (num(19), boot) {
                sample.start_time_seconds = Some(boot + start / ticks);
            }
            sample.virtual_bytes = num(20).map(|v| v as i64);
            sample.resident_bytes = num(21).map(|pages| pages as i64 * 4096);
        }
    }
    sample.open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as i64);
    sample.max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse().ok())
        });
    sample
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let p = read_process(self.ticks);
        if let Some(cpu) = p.cpu_seconds {
            let c = ConstCounter::new(cpu);
            c.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                c.metric_type(),
            )?)?;
        }
        let gauges: [(&str, &str, Option<i64>); 4] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                p.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                p.virtual_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                p.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                p.max_fds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                let g = ConstGauge::new(v);
                g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
            }
        }
        if let Some(start) = p.start_time_seconds {
            let g = ConstGauge::new(start);
            g.encode(encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                None,
                g.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

/// A [`Store`] that times every call of the store it wraps into [`Metrics`].
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for MeteredStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredStore").finish_non_exhaustive()
    }
}

impl MeteredStore {
    /// Wraps `inner`, recording into `metrics`.
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        MeteredStore { inner, metrics }
    }

    fn timed<T>(
        &self,
        operation: &'static str,
        call: impl FnOnce(&dyn Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        // A child span of the request (exported when tracing is on; free otherwise).
        let span = tracing::debug_span!("store", operation, otel.name = operation);
        let _entered = span.enter();
        let started = Instant::now();
        let result = call(self.inner.as_ref());
        self.metrics
            .record_store(operation, started.elapsed(), result.is_err());
        result
    }
}

impl AppStore for MeteredStore {
    fn get_app(&self, id: &str) -> Result<Option<Application>, StoreError> {
        self.timed("get_app", |s| s.get_app(id))
    }

    fn list_apps(&self, after: Option<&str>, limit: usize) -> Result<Vec<Application>, StoreError> {
        self.timed("list_apps", |s| s.list_apps(after, limit))
    }
}

impl TokenStore for MeteredStore {
    fn get_token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.timed("get_token", |s| s.get_token(id))
    }

    fn list_tokens(
        &self,
        app_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        self.timed("list_tokens", |s| s.list_tokens(app_id, after, limit))
    }

    fn scope_is_granted(&self, scope: &Scope) -> Result<bool, StoreError> {
        self.timed("scope_is_granted", |s| s.scope_is_granted(scope))
    }

    fn role_is_granted(&self, role: &RoleName) -> Result<bool, StoreError> {
        self.timed("role_is_granted", |s| s.role_is_granted(role))
    }

    fn expired_tokens(
        &self,
        before: kms_core::Timestamp,
        limit: usize,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        self.timed("expired_tokens", |s| s.expired_tokens(before, limit))
    }

    fn consume_use(&self, id: &str) -> Result<UseOutcome, StoreError> {
        self.timed("consume_use", |s| s.consume_use(id))
    }
}

impl PolicyStore for MeteredStore {
    fn load_policy(&self) -> Result<Policy, StoreError> {
        self.timed("load_policy", |s| s.load_policy())
    }
}

impl KeyStore for MeteredStore {
    fn list_signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        self.timed("list_signing_keys", |s| s.list_signing_keys())
    }
}

impl GrantStore for MeteredStore {
    fn get_refresh_token(&self, id: &str) -> Result<Option<RefreshRecord>, StoreError> {
        self.timed("get_refresh_token", |s| s.get_refresh_token(id))
    }

    fn list_revocations(&self) -> Result<Vec<Revocation>, StoreError> {
        self.timed("list_revocations", |s| s.list_revocations())
    }
}

impl AuditStore for MeteredStore {
    fn last_audit_event(&self) -> Result<Option<AuditEvent>, StoreError> {
        self.timed("last_audit_event", |s| s.last_audit_event())
    }

    fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        self.timed("list_audit", |s| s.list_audit(query))
    }

    fn audit_after(&self, after_seq: u64, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        self.timed("audit_after", |s| s.audit_after(after_seq, limit))
    }
}

impl IdentityStore for MeteredStore {
    fn get_user(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        self.timed("get_user", |s| s.get_user(id))
    }

    fn list_users(
        &self,
        app_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<UserRecord>, StoreError> {
        self.timed("list_users", |s| s.list_users(app_id, after, limit))
    }

    fn user_by_identity(
        &self,
        idp_id: &str,
        subject: &str,
    ) -> Result<Option<UserRecord>, StoreError> {
        self.timed("user_by_identity", |s| s.user_by_identity(idp_id, subject))
    }

    fn role_is_held_by_users(&self, role: &RoleName) -> Result<bool, StoreError> {
        self.timed("role_is_held_by_users", |s| s.role_is_held_by_users(role))
    }

    fn get_idp(&self, id: &str) -> Result<Option<IdpRecord>, StoreError> {
        self.timed("get_idp", |s| s.get_idp(id))
    }

    fn idp_by_slug(&self, slug: &str) -> Result<Option<IdpRecord>, StoreError> {
        self.timed("idp_by_slug", |s| s.idp_by_slug(slug))
    }

    fn list_idps(&self, app_id: Option<&str>) -> Result<Vec<IdpRecord>, StoreError> {
        self.timed("list_idps", |s| s.list_idps(app_id))
    }

    fn get_login_attempt(&self, id: &str) -> Result<Option<LoginAttempt>, StoreError> {
        self.timed("get_login_attempt", |s| s.get_login_attempt(id))
    }

    fn get_session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.timed("get_session", |s| s.get_session(id))
    }

    fn list_sessions(
        &self,
        user_id: &str,
        now: kms_core::Timestamp,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        self.timed("list_sessions", |s| s.list_sessions(user_id, now))
    }

    fn sealed_identity_records(
        &self,
    ) -> Result<kms_core::store::SealedIdentityRecords, StoreError> {
        self.timed("sealed_identity_records", |s| s.sealed_identity_records())
    }
}

impl kms_core::store::UsageStore for MeteredStore {
    fn add_usage(
        &self,
        counts: &[kms_core::store::UsageCount],
        touches: &[kms_core::store::TokenTouch],
    ) -> Result<(), StoreError> {
        self.timed("add_usage", |s| s.add_usage(counts, touches))
    }

    fn usage(
        &self,
        subject: kms_core::store::UsageSubject<'_>,
        from: kms_core::Timestamp,
        to: kms_core::Timestamp,
    ) -> Result<Vec<kms_core::store::UsageRow>, StoreError> {
        self.timed("usage", |s| s.usage(subject, from, to))
    }

    fn usage_buckets_before(&self, before: kms_core::Timestamp) -> Result<u64, StoreError> {
        self.timed("usage_buckets_before", |s| s.usage_buckets_before(before))
    }
}

impl kms_core::store::PrivacyStore for MeteredStore {
    fn get_person_key(
        &self,
        subject: &str,
    ) -> Result<Option<kms_core::store::PersonKeyRecord>, StoreError> {
        self.timed("get_person_key", |s| s.get_person_key(subject))
    }

    fn list_person_keys(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<kms_core::store::PersonKeyRecord>, StoreError> {
        self.timed("list_person_keys", |s| s.list_person_keys(after, limit))
    }

    fn audit_concerning(
        &self,
        ids: &[String],
        before_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        self.timed("audit_concerning", |s| {
            s.audit_concerning(ids, before_seq, limit)
        })
    }

    fn user_sessions(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError> {
        self.timed("user_sessions", |s| s.user_sessions(user_id))
    }

    fn ended_sessions(
        &self,
        ended_before: kms_core::Timestamp,
        used_before: kms_core::Timestamp,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.timed("ended_sessions", |s| {
            s.ended_sessions(ended_before, used_before, limit)
        })
    }
}

impl kms_core::store::CapacityStore for MeteredStore {
    fn capacity(
        &self,
        since: kms_core::Timestamp,
    ) -> Result<kms_core::store::Capacity, StoreError> {
        self.timed("capacity", |s| {
            kms_core::store::CapacityStore::capacity(s, since)
        })
    }
}

impl Store for MeteredStore {
    fn apply(&self, batch: &[Mutation]) -> Result<(), StoreError> {
        self.timed("apply", |s| s.apply(batch))?;
        // Business metrics from what was committed: every change carries its audit event.
        for m in batch {
            if let Mutation::AppendAudit(e) | Mutation::ChainAudit(e) = m {
                self.metrics.record_audit(&e.action, &e.outcome);
                if e.action == "sso.login" {
                    self.metrics.record_login(e);
                }
            }
        }
        Ok(())
    }

    fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.timed("get_meta", |s| s.get_meta(key))
    }

    fn subscribe(&self, listener: std::sync::Weak<dyn ChangeListener>) {
        self.inner.subscribe(listener);
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.timed("ping", |s| s.ping())
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_route_template_and_status() {
        let metrics = Metrics::new();
        metrics.record_request(
            &Method::GET,
            "/v1/tokens/{id}",
            404,
            Duration::from_millis(3),
        );
        metrics.record_verification("VALID");
        let text = metrics.encode().unwrap_or_default();
        assert!(text.contains(
            r#"kms_http_requests_total{method="GET",route="/v1/tokens/{id}",status="404"} 1"#
        ));
        assert!(text.contains(r#"kms_verifications_total{code="VALID"} 1"#));
        assert!(text.contains("kms_http_request_duration_seconds_bucket"));
    }

    #[test]
    fn extension_methods_share_one_label() {
        for name in ["FOO", "get", "PROPFIND", "X-1"] {
            let method = Method::from_bytes(name.as_bytes()).unwrap();
            assert_eq!(method_label(&method), OTHER_METHOD, "{name}");
        }
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        assert_eq!(method_label(&Method::GET), "GET");
    }
}
