//! `kms serve`: the runtime, the router over an opened [`Kms`](kms_core::Kms), the
//! listener (plain or TLS, behind the connection gate), the upkeep task and the alert
//! worker, until a shutdown signal.

use std::sync::Arc;

use kms_core::SecurityEventSink;
use serde_json::json;

use crate::bootstrap::open::{open_kms_with, MasterKeyFile};
use crate::bootstrap::StartError;
use crate::config::{Config, ServeConfig};
use crate::http::connections::{ConnectionGate, TcpIncoming};
use crate::http::middleware::client_addr::NetworkPolicy;
use crate::http::server::{self, HttpOptions, ServeOptions};
use crate::http::tls::TlsListener;
use crate::ops::alerts::{self, RetryPolicy};
use crate::ops::maintenance::Maintenance;
use crate::ops::metrics::Metrics;

/// Longest the server waits at shutdown for queued decision records to reach their file.
const DECISION_LOG_FLUSH: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves the API on the database of `config` with the settings of `serve_config` until
/// SIGINT or SIGTERM; an empty database is initialised first (its root token printed once
/// on stderr).
pub fn serve(config: &Config, serve_config: &ServeConfig) -> Result<(), StartError> {
    // Settings that can fail are checked before the database is touched.
    let tls = serve_config
        .tls
        .as_ref()
        .map(crate::http::tls::server_config)
        .transpose()
        .map_err(StartError::new)?;
    // The decision log file is opened (and created) before the database is touched.
    if let Some(settings) = &serve_config.decision_log {
        crate::ops::decision_log::install(
            crate::ops::decision_log::DecisionLog::open(settings).map_err(StartError::new)?,
        );
    }
    // Bound first, so the public URL's default can name the port actually bound.
    let bound = std::net::TcpListener::bind(serve_config.listen).map_err(|e| {
        StartError::new(format!(
            "cannot listen on {} (from the listen setting): {e}",
            serve_config.listen
        ))
    })?;
    let local = bound
        .local_addr()
        .and_then(|a| bound.set_nonblocking(true).map(|()| a))
        .map_err(|e| StartError::new(format!("cannot read the bound address: {e}")))?;
    let mut serve_config = serve_config.clone();
    if serve_config.public_url.is_none() {
        let scheme = if tls.is_some() { "https" } else { "http" };
        serve_config.public_url = Some(format!("{scheme}://{local}"));
    }
    let serve_config = &serve_config;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| StartError::new(format!("cannot start the async runtime: {e}")))?;
    let metrics = Arc::new(Metrics::new());
    if let Some(files) = &serve_config.tls {
        match crate::http::tls::certificate_expiry(files) {
            Ok(at) => metrics.observe_tls_expiry(at),
            Err(e) => tracing::warn!(error = %e, "the TLS certificate's expiry is not known"),
        }
    }
    let (alerts, alert_worker) = match &serve_config.alerts {
        Some(settings) => {
            let (sink, worker) =
                alerts::webhook(settings, RetryPolicy::default(), Some(metrics.clone()));
            (
                Some(Arc::new(sink) as Arc<dyn SecurityEventSink>),
                Some(worker),
            )
        }
        None => (None, None),
    };
    let kms = open_kms_with(
        config,
        Some(serve_config),
        Some(metrics.clone()),
        MasterKeyFile::CreateIfMissing,
        alerts,
    )?;
    let initialised = if kms.is_initialized()? {
        None
    } else {
        match kms.initialize() {
            Ok(root) => Some(root),
            // Another node sharing the database initialised it at the same moment.
            Err(e) if e.code() == kms_core::ErrorCode::Conflict && kms.is_initialized()? => None,
            Err(e) => return Err(e.into()),
        }
    };
    let added = kms.add_new_default_permissions()?;
    if !added.is_empty() {
        tracing::info!(?added, "added the default permissions of this release");
    }
    if let Some(root) = initialised {
        // Printed once, here, and nowhere else: it is never logged. The second line is the
        // same JSON object `kms init` prints, for scripts.
        eprintln!(
            "kms: initialised {}; the root token below is shown once, store it now:",
            config.db_shown()
        );
        eprintln!(
            "{}",
            json!({"root_token": root.token, "token_id": root.info.id})
        );
    }
    let options = HttpOptions {
        body_limit: serve_config.body_limit,
        request_timeout: serve_config.request_timeout,
        network: NetworkPolicy {
            deny: serve_config.deny_networks.clone(),
            trusted_proxies: serve_config.trusted_proxies.clone(),
        },
        rate_limit: serve_config.rate_limit,
        hsts: tls.is_some(),
        public_url: serve_config.public_url_or_default(),
        secure_cookies: tls.is_some(),
        compliance: serve_config.compliance.clone(),
    };
    let app = server::router(kms.clone(), metrics.clone(), &options);
    let maintenance = Maintenance {
        key_rotation_interval: serve_config.key_rotation_interval,
        audit_retention: serve_config.audit_retention,
        expired_token_retention: serve_config.expired_token_retention,
        session_retention: serve_config.session_retention,
        usage_retention: serve_config.usage.retention,
    };
    let checkpoints = match &serve_config.audit_checkpoints {
        Some(settings) => Some(
            crate::ops::checkpoints::CheckpointWriter::open(settings.clone(), &kms)
                .map_err(StartError::new)?,
        ),
        None => None,
    };
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::from_std(bound).map_err(|e| {
            StartError::new(format!(
                "cannot listen on {} (from the listen setting): {e}",
                serve_config.listen
            ))
        })?;
        if let Some(worker) = alert_worker {
            tokio::spawn(worker.run());
        }
        let watcher = crate::ops::counters::spawn(kms.clone());
        let capacity = crate::ops::capacity::spawn(kms.clone(), metrics.clone());
        let (stop_checkpoints, checkpoints_stopped) = tokio::sync::oneshot::channel::<()>();
        let checkpointing = checkpoints.map(|writer| {
            tokio::spawn(writer.run(kms.clone(), async move {
                // A dropped sender stops the writer as well.
                let _ = checkpoints_stopped.await;
            }))
        });
        let usage_flush = crate::ops::usage::spawn(kms.clone(), serve_config.usage.flush_interval);
        let upkeep = maintenance.spawn(kms.clone());
        eprintln!("listening on {local}");
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(address = %local, scheme, db = %config.db_shown(), "kms is serving");
        let gate = ConnectionGate::new(serve_config.connection_limits.clone(), metrics);
        let serving = ServeOptions {
            header_read_timeout: serve_config.header_read_timeout,
            shutdown_timeout: serve_config.shutdown_timeout,
        };
        match tls {
            Some(tls) => {
                // The handshake gets as long as the headers will.
                let listener = TlsListener::new(listener, tls, gate, serving.header_read_timeout)
                    .map_err(|e| {
                    StartError::new(format!("cannot read the bound address: {e}"))
                })?;
                server::serve(listener, app, serving).await;
            }
            None => server::serve(TcpIncoming::new(listener, gate), app, serving).await,
        }
        upkeep.abort();
        watcher.abort();
        capacity.abort();
        // What was counted since the last flush goes in before the process ends.
        usage_flush.abort();
        crate::ops::usage::flush_at_shutdown(kms).await;
        // The last checkpoint covers the events of the final requests.
        let _ = stop_checkpoints.send(());
        if let Some(writer) = checkpointing {
            if tokio::time::timeout(DECISION_LOG_FLUSH, writer)
                .await
                .is_err()
            {
                tracing::warn!("the last audit checkpoint was not written in time");
            }
        }
        if !crate::ops::decision_log::flush(DECISION_LOG_FLUSH) {
            tracing::warn!("decision records queued at shutdown may not all be in the file");
        }
        tracing::info!("kms stopped");
        Ok(())
    })
}
