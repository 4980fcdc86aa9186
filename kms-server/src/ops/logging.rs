//! Structured logs on stderr, as text or one JSON object per line, and (when configured)
//! the OpenTelemetry spans of [`crate::ops::telemetry`]. Nothing logs request bodies or
//! headers, so no secret reaches a log line.

use std::io::IsTerminal;

use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::prelude::*;
use tracing_subscriber::{Layer, Registry};

use crate::config::LogFormat;
use crate::ops::telemetry::{self, Telemetry, TracingSettings};

/// Installs the global subscriber. `filter` is a tracing filter such as `info`; with
/// `tracing`, kms's spans (at every level, whatever `filter` says) are also exported over
/// OTLP. Gives the exporter's handle, to flush at exit.
pub fn init(
    format: LogFormat,
    filter: &str,
    tracing: Option<&TracingSettings>,
) -> Result<Option<Telemetry>, String> {
    let filter = EnvFilter::try_new(filter).map_err(|e| format!("invalid log level: {e}"))?;
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(true);
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    // The caller's `traceparent` is read (and its trace id logged) with or without export.
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let registry = tracing_subscriber::registry().with(fmt.with_filter(filter));
    let result = match tracing {
        None => registry.try_init().map(|()| None),
        Some(settings) => {
            let (layer, handle) = telemetry::start(settings)?;
            // Spans only (log events stay in the log), and only kms's own.
            let ours = filter_fn(|meta| {
                meta.is_span()
                    && (meta.target().starts_with("kms_server")
                        || meta.target().starts_with("kms_core"))
            });
            registry
                .with(layer.with_filter(ours))
                .try_init()
                .map(|()| Some(handle))
        }
    };
    result.map_err(|e| format!("cannot install the logger: {e}"))
}
