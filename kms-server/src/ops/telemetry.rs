//! Distributed tracing: OpenTelemetry spans exported over OTLP/HTTP (protobuf) when an
//! endpoint is configured (`--otlp-endpoint`, or the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT`).
//!
//! Every request is a server span named `METHOD route` (`POST /v1/verify`), continuing the
//! caller's W3C `traceparent` when it sends one; store calls (`store <operation>`) and
//! argon2id hashing (`argon2id`) are its children, since the blocking pool runs them inside
//! the request's span. Sampling follows the caller's decision when there is one, else
//! samples the configured ratio of traces. Spans are batched on their own thread and sent
//! with the workspace's HTTP client (ureq); a collector that is down costs dropped spans,
//! never a failed request. The trace id is also put on the request's log span, so every
//! JSON log line of a request carries it.

use std::time::Duration;

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::Context;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;

/// How often batched spans are sent.
const EXPORT_EVERY: Duration = Duration::from_millis(500);

/// Longest one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how much to trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracingSettings {
    /// The collector's base URL (`http://127.0.0.1:4318`); spans go to `{endpoint}/v1/traces`.
    pub endpoint: String,
    /// Share of new traces sampled, in millionths (0–1,000,000); a caller's sampling
    /// decision is followed.
    pub sample_per_million: u32,
}

/// The running exporter; [`Telemetry::shutdown`] sends what is still batched.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Sends the spans still batched and stops the exporter.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "traces could not all be sent at shutdown");
        }
    }
}

/// The OTLP traces URL of a collector base URL.
fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    }
}

/// The exporter's HTTP client: a blocking ureq call (the batch processor runs on a thread
/// of its own, not on the async runtime).
#[derive(Debug)]
struct UreqClient(ureq::Agent);

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for UreqClient {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
    ) -> Result<
        opentelemetry_http::Response<opentelemetry_http::Bytes>,
        opentelemetry_http::HttpError,
    > {
        let (parts, body) = request.into_parts();
        let mut call = self
            .0
            .request(parts.method.as_str(), &parts.uri.to_string());
        for (name, value) in &parts.headers {
            if let Ok(value) = value.to_str() {
                call = call.set(name.as_str(), value);
            }
        }
        let response = match call.send_bytes(&body) {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(Box::new(e)),
        };
        let status = response.status();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut response.into_reader(), &mut bytes)?;
        let mut out = opentelemetry_http::Response::new(opentelemetry_http::Bytes::from(bytes));
        *out.status_mut() = http_status(status)?;
        Ok(out)
    }
}

fn http_status(code: u16) -> Result<axum::http::StatusCode, opentelemetry_http::HttpError> {
    axum::http::StatusCode::from_u16(code).map_err(|e| Box::new(e) as opentelemetry_http::HttpError)
}

/// Starts the exporter; gives the `tracing` layer that feeds it, and its handle.
pub fn start<S>(
    settings: &TracingSettings,
) -> Result<
    (
        tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>,
        Telemetry,
    ),
    String,
>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    let agent = ureq::AgentBuilder::new().timeout(EXPORT_TIMEOUT).build();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(UreqClient(agent))
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(traces_url(&settings.endpoint))
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot set up the OTLP exporter: {e}"))?;
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(EXPORT_EVERY)
                .build(),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            f64::from(settings.sample_per_million) / 1_000_000.0,
        ))))
        .with_resource(Resource::builder().with_service_name("kms").build())
        .build();
    let tracer = provider.tracer("kms");
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let layer = tracing_opentelemetry::layer().with_tracer(tracer);
    Ok((layer, Telemetry { provider }))
}

/// The caller's trace context, from its `traceparent` (and `tracestate`) headers.
pub fn caller_context(headers: &axum::http::HeaderMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&opentelemetry_http::HeaderExtractor(headers))
    })
}

/// Makes `span` continue the caller's trace, and records the trace id on it (for the log
/// lines); with tracing off, the caller's trace id from `traceparent` is recorded.
pub fn continue_trace(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let parent = caller_context(headers);
    let _ = span.set_parent(parent.clone());
    let own = span.context();
    let span_context = own.span().span_context().clone();
    let trace_id = if span_context.is_valid() {
        Some(span_context.trace_id().to_string())
    } else {
        let remote = parent.span().span_context().clone();
        remote.is_valid().then(|| remote.trace_id().to_string())
    };
    if let Some(trace_id) = trace_id {
        span.record("trace_id", trace_id.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::traces_url;

    #[test]
    fn the_traces_path_is_added_once() {
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
    }
}
