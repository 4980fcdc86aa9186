//! Security alerts to a webhook: each security event of kms-core (a lockout, refresh-token
//! reuse, a broken audit chain) is POSTed as JSON to the configured URL.
//!
//! The body is the event with its time and a delivery id, e.g.
//! `{"event": "lockout", "source": "ip:203.0.113.9", "at": "2030-01-01T00:00:00Z",
//! "id": "alert_..."}`. The header `X-KMS-Webhook-Signature: sha256=<hex>` carries the
//! HMAC-SHA256 of the exact body bytes under the shared secret; receivers should compare it
//! in constant time and may drop repeated ids (a retried delivery keeps its id).
//!
//! The request path never waits: the sink puts events in a bounded queue and, when the
//! queue is full, drops the event (counted in `kms_alerts_total{outcome="dropped"}` and
//! logged). A worker task delivers them one by one, retrying failures with exponential
//! backoff.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use kms_core::{SecurityEvent, SecurityEventSink};
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::config::AlertSettings;
use crate::ops::metrics::Metrics;

/// The header carrying the body's signature.
pub const SIGNATURE_HEADER: &str = "x-kms-webhook-signature";

/// Events waiting for delivery before new ones are dropped.
pub const QUEUE_CAPACITY: usize = 1024;

/// How deliveries are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per event, the first included.
    pub attempts: u32,
    /// Wait before the second attempt; doubled before each further one.
    pub first_backoff: Duration,
    /// Longest one attempt may take.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            first_backoff: Duration::from_millis(500),
            timeout: Duration::from_secs(5),
        }
    }
}

/// One alert ready to send: the exact body bytes.
#[derive(Debug, Clone)]
struct Alert {
    kind: String,
    body: Vec<u8>,
}

/// The sink given to kms-core: queues events for the [`AlertWorker`].
#[derive(Debug)]
pub struct WebhookAlerts {
    queue: mpsc::Sender<Alert>,
    metrics: Option<Arc<Metrics>>,
}

/// Delivers queued alerts; run it with [`AlertWorker::run`] on a Tokio runtime.
#[derive(Debug)]
pub struct AlertWorker {
    queue: mpsc::Receiver<Alert>,
    url: String,
    key: Vec<u8>,
    retry: RetryPolicy,
    metrics: Option<Arc<Metrics>>,
}

/// A sink and its worker for `settings`.
pub fn webhook(
    settings: &AlertSettings,
    retry: RetryPolicy,
    metrics: Option<Arc<Metrics>>,
) -> (WebhookAlerts, AlertWorker) {
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    (
        WebhookAlerts {
            queue: tx,
            metrics: metrics.clone(),
        },
        AlertWorker {
            queue: rx,
            url: settings.url.clone(),
            key: settings.secret.expose().as_bytes().to_vec(),
            retry,
            metrics,
        },
    )
}

/// The body of the alert for `event` at `at`.
fn alert_body(event: &SecurityEvent, at: time::OffsetDateTime, id: &str) -> (String, Vec<u8>) {
    let kind = event.kind().to_owned();
    let mut value = serde_json::to_value(event).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        let at = at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        map.insert("at".to_owned(), serde_json::Value::String(at));
        map.insert("id".to_owned(), serde_json::Value::String(id.to_owned()));
    }
    (kind, serde_json::to_vec(&value).unwrap_or_default())
}

/// `sha256=<hex HMAC-SHA256(key, body)>`, the value of [`SIGNATURE_HEADER`].
pub fn signature(key: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(body);
    let hex = base16ct::lower::encode_string(&mac.finalize().into_bytes());
    format!("sha256={hex}")
}

impl SecurityEventSink for WebhookAlerts {
    fn on_security_event(&self, event: &SecurityEvent) {
        let id = crate::http::middleware::RequestId::generate()
            .as_str()
            .replacen("req_", "alert_", 1);
        let (kind, body) = alert_body(event, time::OffsetDateTime::now_utc(), &id);
        match self.queue.try_send(Alert {
            kind: kind.clone(),
            body,
        }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(event = %kind, "the alert queue is full; alert dropped");
                if let Some(m) = &self.metrics {
                    m.record_alert("dropped");
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::warn!(event = %kind, "the alert worker has stopped; alert dropped");
                if let Some(m) = &self.metrics {
                    m.record_alert("dropped");
                }
            }
        }
    }
}

impl AlertWorker {
    /// Delivers alerts until every sink is gone.
    pub async fn run(mut self) {
        while let Some(alert) = self.queue.recv().await {
            let outcome = if self.deliver(&alert).await {
                "delivered"
            } else {
                "failed"
            };
            if let Some(m) = &self.metrics {
                m.record_alert(outcome);
            }
        }
    }

    /// Sends one alert, retrying with backoff; true when the receiver took it.
    async fn deliver(&self, alert: &Alert) -> bool {
        let signature = signature(&self.key, &alert.body);
        let mut backoff = self.retry.first_backoff;
        for attempt in 1..=self.retry.attempts.max(1) {
            let url = self.url.clone();
            let body = alert.body.clone();
            let signature = signature.clone();
            let timeout = self.retry.timeout;
            let sent = tokio::task::spawn_blocking(move || post(&url, &body, &signature, timeout))
                .await
                .unwrap_or_else(|e| Err(format!("the delivery task failed: {e}")));
            match sent {
                Ok(()) => {
                    tracing::debug!(event = %alert.kind, attempt, "alert delivered");
                    return true;
                }
                Err(problem) if attempt < self.retry.attempts => {
                    tracing::info!(event = %alert.kind, attempt, problem = %problem, "alert delivery failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2);
                }
                Err(problem) => {
                    tracing::warn!(event = %alert.kind, attempt, problem = %problem, "alert delivery failed; giving up");
                }
            }
        }
        false
    }
}

/// One POST; `Err` describes the failure without the URL's query (it may hold a token).
fn post(url: &str, body: &[u8], signature: &str, timeout: Duration) -> Result<(), String> {
    let result = ureq::post(url)
        .timeout(timeout)
        .set("content-type", "application/json")
        .set("user-agent", "kms-alerts")
        .set(SIGNATURE_HEADER, signature)
        .send_bytes(body);
    match result {
        Ok(_) => Ok(()),
        Err(ureq::Error::Status(code, _)) => Err(format!("the receiver answered {code}")),
        Err(ureq::Error::Transport(t)) => Err(format!("transport error: {}", t.kind())),
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
    fn the_signature_is_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn bodies_carry_the_event_its_time_and_an_id() {
        let at = time::macros::datetime!(2030-01-02 03:04:05 UTC);
        let (kind, body) = alert_body(
            &SecurityEvent::Lockout {
                source: "ip:203.0.113.9".into(),
            },
            at,
            "alert_1",
        );
        assert_eq!(kind, "lockout");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"event": "lockout", "source": "ip:203.0.113.9",
                "at": "2030-01-02T03:04:05Z", "id": "alert_1"})
        );
    }

    #[test]
    fn a_full_queue_drops_without_blocking() {
        let settings = AlertSettings {
            url: "http://127.0.0.1:9/".into(),
            secret: crate::config::Secret::new("0123456789abcdef"),
        };
        let metrics = Arc::new(Metrics::new());
        let (sink, _worker) = webhook(&settings, RetryPolicy::default(), Some(metrics.clone()));
        let event = SecurityEvent::AuditChainBroken { first_bad_seq: 3 };
        for _ in 0..QUEUE_CAPACITY + 5 {
            sink.on_security_event(&event);
        }
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(r#"kms_alerts_total{outcome="dropped"} 5"#),
            "{text}"
        );
    }
}
