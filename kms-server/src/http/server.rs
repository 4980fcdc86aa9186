//! The HTTP server: the router with its layers, and serving it on admitted connections
//! ([`crate::http::connections`]) with a header read timeout and graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, DefaultBodyLimit, OriginalUri, Request};
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use axum::Router;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use kms_core::Kms;
use tokio::sync::watch;
use tower::{ServiceBuilder, ServiceExt};

use crate::config::RateLimitSettings;
use crate::http::connections::{Admitted, Incoming};
use crate::http::error::ApiError;
use crate::http::middleware::auth::{AuthLayer, CookieAuth};
use crate::http::middleware::client_addr::{NetworkGate, NetworkPolicy};
use crate::http::middleware::edge::{EdgeLayer, EdgeSettings};
use crate::http::middleware::rate_limit;
use crate::http::middleware::rate_limit::ClientRateLimit;
use crate::http::middleware::signed_requests::SignatureLayer;
use crate::http::routes::{
    apps, audit, docs, health, keys, oauth, people, permissions, reports, roles, tokens, ui, usage,
    verify, AppState,
};
use crate::ops::metrics::Metrics;

/// The largest request body by default, in bytes: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;
/// The longest a request may run by default before it is answered `503`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest a client may take to send a request's headers, by default.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest in-flight requests may take to finish after a shutdown signal, by default.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of the HTTP layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOptions {
    /// Largest request body in bytes (default 1 MiB).
    pub body_limit: usize,
    /// Longest a request may run before it is answered `503` (default 30 s).
    pub request_timeout: Duration,
    /// Denied networks and trusted proxies (default: none of either).
    pub network: NetworkPolicy,
    /// The rate limit per client address on management calls (default 100/s, bursts of
    /// 200); `None` disables it.
    pub rate_limit: Option<RateLimitSettings>,
    /// Whether responses carry `Strict-Transport-Security` (set when serving TLS).
    pub hsts: bool,
    /// The address browsers and identity providers reach kms at: the session cookie's
    /// `Origin` check and every SSO URL use it.
    pub public_url: String,
    /// Whether cookies are `Secure` (the server runs under TLS).
    pub secure_cookies: bool,
    /// The thresholds of the compliance report.
    pub compliance: kms_core::ComplianceSettings,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            body_limit: DEFAULT_BODY_LIMIT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            network: NetworkPolicy::default(),
            rate_limit: Some(RateLimitSettings::default()),
            hsts: false,
            public_url: "http://127.0.0.1:8080".to_owned(),
            secure_cookies: false,
            compliance: kms_core::ComplianceSettings::default(),
        }
    }
}

/// The complete HTTP API over `kms`, recording into `metrics`.
pub fn router(kms: Kms, metrics: Arc<Metrics>, options: &HttpOptions) -> Router {
    metrics.observe_cache(&kms);
    let routes = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(docs::openapi_json))
        .route("/.well-known/jwks.json", get(oauth::jwks))
        // The OAuth endpoints authenticate themselves: they answer in the OAuth shape.
        .route("/v1/auth/token", post(oauth::token))
        .route("/v1/auth/introspect", post(oauth::introspect))
        .route("/v1/auth/revoke", post(oauth::revoke))
        // The administration console: static files, a client of the routes below.
        .route("/ui", get(ui::index))
        .route("/ui/", get(ui::index))
        .route("/ui/{*path}", get(ui::file))
        .merge(management_routes(kms.clone(), &metrics, options))
        .merge(sso_routes(&metrics, options))
        // Verification is the services' hot path: authenticated, never rate limited per
        // address (a service verifies for many end users), signed when the caller's
        // application requires it.
        .merge(
            Router::new()
                .route("/v1/verify", post(verify::verify))
                .route_layer(SignatureLayer::new(kms.clone(), metrics.clone()))
                .route_layer(
                    AuthLayer::new(kms.clone())
                        .with_session_cookie(CookieAuth::for_public_url(&options.public_url)),
                ),
        );
    with_layers(routes, kms, metrics, options)
}

/// The management routes under `/v1`: rate limited per client address, then behind bearer
/// authentication and, for applications that require it, a request signature.
fn management_routes(kms: Kms, metrics: &Arc<Metrics>, options: &HttpOptions) -> Router<AppState> {
    let routes = Router::new()
        .route("/v1/apps", post(apps::create_app).get(apps::list_apps))
        .route(
            "/v1/apps/{id}",
            get(apps::get_app)
                .patch(apps::update_app)
                .delete(apps::delete_app),
        )
        .route(
            "/v1/apps/{app_id}/tokens",
            post(tokens::create_token).get(tokens::list_tokens),
        )
        .route(
            "/v1/permissions",
            post(permissions::create_permission).get(permissions::list_permissions),
        )
        .route(
            "/v1/permissions/bulk",
            post(permissions::create_permissions),
        )
        .route(
            "/v1/permissions/{scope}",
            axum::routing::delete(permissions::delete_permission),
        )
        .route("/v1/roles", post(roles::create_role).get(roles::list_roles))
        .route(
            "/v1/roles/{name}",
            get(roles::get_role)
                .patch(roles::update_role)
                .delete(roles::delete_role),
        )
        .route(
            "/v1/tokens/{id}",
            get(tokens::get_token)
                .patch(tokens::update_token)
                .delete(tokens::delete_token),
        )
        .route("/v1/tokens/{id}/revoke", post(tokens::revoke_token))
        .route("/v1/tokens/revoke", post(tokens::revoke_tokens))
        .route("/v1/tokens/roles", post(tokens::change_token_roles))
        .route(
            "/v1/permissions/bulk-delete",
            post(permissions::delete_permissions),
        )
        .route("/v1/apps/{app_id}/tokens/bulk", post(tokens::create_tokens))
        .route("/v1/tokens/{id}/rotate", post(tokens::rotate_token))
        .route("/v1/keys", get(keys::list_keys))
        .route("/v1/keys/rotate", post(keys::rotate_keys))
        .route("/v1/audit", get(audit::list_audit))
        .route("/v1/audit/verify", get(audit::verify_audit))
        .route(
            "/v1/apps/{id}/signing-secret",
            post(apps::rotate_signing_secret),
        )
        .route(
            "/v1/apps/{app_id}/idps",
            post(people::create_idp).get(people::list_idps),
        )
        .route(
            "/v1/idps/{id}",
            get(people::get_idp)
                .patch(people::update_idp)
                .delete(people::delete_idp),
        )
        .route("/v1/apps/{app_id}/users", get(people::list_users))
        .route("/v1/users/roles", post(people::change_user_roles))
        .route(
            "/v1/users/{id}",
            get(people::get_user)
                .patch(people::update_user)
                .delete(people::delete_user),
        )
        .route("/v1/users/{id}/sessions", get(people::list_user_sessions))
        .route(
            "/v1/users/{id}/export",
            get(crate::http::routes::privacy::export_user),
        )
        .route(
            "/v1/users/{id}/sessions/revoke",
            post(people::revoke_user_sessions),
        )
        .route("/v1/sessions/{id}/revoke", post(people::revoke_session))
        .route("/v1/stats", get(reports::stats))
        .route(
            "/v1/reports/compliance",
            get(reports::compliance).layer(axum::Extension(Arc::new(options.compliance.clone()))),
        )
        .route("/v1/apps/{app_id}/usage", get(usage::app_usage))
        .route("/v1/tokens/{id}/usage", get(usage::token_usage))
        .route("/v1/me", get(people::me))
        .route("/v1/me/sessions", get(people::my_sessions))
        .route(
            "/v1/auth/logout",
            post(people::logout).layer(axum::Extension(people::CookieSettings::new(options))),
        )
        .route_layer(SignatureLayer::new(kms.clone(), metrics.clone()))
        .route_layer(
            AuthLayer::new(kms)
                .with_session_cookie(CookieAuth::for_public_url(&options.public_url)),
        );
    with_client_rate_limit(routes, metrics, options)
}

/// The single sign-on endpoints browsers and providers call without a bearer token,
/// rate limited per client address like the management calls.
fn sso_routes(metrics: &Arc<Metrics>, options: &HttpOptions) -> Router<AppState> {
    let routes = Router::new()
        .route("/v1/sso/discover", get(people::discover))
        .route("/v1/sso/{slug}/login", get(people::login))
        .route("/v1/sso/{slug}/callback", get(people::oidc_callback))
        .route("/v1/sso/{slug}/acs", post(people::saml_acs))
        .route("/v1/sso/{slug}/metadata", get(people::saml_metadata))
        .layer(axum::Extension(people::CookieSettings::new(options)));
    with_client_rate_limit(routes, metrics, options)
}

fn with_client_rate_limit(
    routes: Router<AppState>,
    metrics: &Arc<Metrics>,
    options: &HttpOptions,
) -> Router<AppState> {
    match options.rate_limit {
        Some(settings) => routes.route_layer(from_fn_with_state(
            Arc::new(ClientRateLimit::new(settings, metrics.clone())),
            rate_limit::limit_per_client,
        )),
        None => routes,
    }
}

/// `routes` with the fallback and every layer of the server around them.
fn with_layers(
    routes: Router<AppState>,
    kms: Kms,
    metrics: Arc<Metrics>,
    options: &HttpOptions,
) -> Router {
    let edge = EdgeLayer::new(EdgeSettings {
        metrics: metrics.clone(),
        network: NetworkGate {
            policy: Arc::new(options.network.clone()),
            metrics: metrics.clone(),
        },
        request_timeout: options.request_timeout,
        body_limit: options.body_limit,
        hsts: options.hsts,
    });
    let layers = ServiceBuilder::new()
        .layer(edge)
        .layer(DefaultBodyLimit::max(options.body_limit));

    routes
        .fallback(no_route)
        .layer(layers)
        .with_state(AppState { kms, metrics })
}

async fn no_route(OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::no_route(uri.path())
}

/// How connections are served: limits on time that apply before and between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOptions {
    /// Longest a client may take to send a request's headers, counted from when the server
    /// starts waiting for them: on a new connection, and on a kept-alive one after each
    /// answer (so it is also the idle limit of keep-alive). A TLS handshake has as long
    /// again. Over it, the connection is closed (default 10 s).
    pub header_read_timeout: Duration,
    /// Longest in-flight requests may take to finish after a shutdown signal (default 30 s).
    pub shutdown_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }
}

/// Serves `app` on the connections of `incoming` (plain TCP or TLS, admitted by the
/// connection limits) until SIGINT or SIGTERM, then stops accepting and lets in-flight
/// requests finish, for at most `options.shutdown_timeout`.
pub async fn serve<I: Incoming>(mut incoming: I, app: Router, options: ServeOptions) {
    // Every connection task holds a receiver: the sender's `closed` is "all are done".
    let (draining_tx, draining) = watch::channel(false);
    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            admitted = incoming.accept() => {
                tokio::spawn(serve_connection(
                    admitted,
                    app.clone(),
                    options.header_read_timeout,
                    draining.clone(),
                ));
            }
            () = &mut signal => break,
        }
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
    drop(incoming);
    drop(draining);
    let _ = draining_tx.send(true);
    if tokio::time::timeout(options.shutdown_timeout, draining_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            timeout_ms = options.shutdown_timeout.as_millis() as u64,
            "in-flight requests did not finish in time; stopping anyway"
        );
    }
}

/// Serves HTTP/1.1 on one connection until it closes, with the header read timeout; once
/// `draining` turns true, finishes the request in flight and closes.
async fn serve_connection<Io>(
    admitted: Admitted<Io>,
    app: Router,
    header_read_timeout: Duration,
    mut draining: watch::Receiver<bool>,
) where
    Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Admitted { io, peer, permit } = admitted;
    let _permit = permit;
    let service = service_fn(move |mut request: Request<hyper::body::Incoming>| {
        // What `into_make_service_with_connect_info` gave: the client address layer reads it.
        request.extensions_mut().insert(ConnectInfo(peer));
        app.clone().oneshot(request)
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut shutting_down = false;
    loop {
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(peer = %peer, error = %e, "connection closed");
                }
                return;
            }
            _ = draining.wait_for(|d| *d), if !shutting_down => {
                shutting_down = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
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
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::response::Response;

    use tower::ServiceExt;

    fn kms() -> Kms {
        Kms::builder(Arc::new(kms_store::MemoryStore::new()))
            .hash_params(kms_core::dangerous::insecure_hash_params())
            .build()
            .unwrap()
    }

    async fn body_json(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_internal_without_details() {
        let routes = Router::new().route(
            "/boom",
            get(|| async {
                panic!("secret detail");
                #[allow(unreachable_code, reason = "gives the handler a type")]
                ""
            }),
        );
        let options = HttpOptions::default();
        let app = with_layers(routes, kms(), Arc::new(Metrics::new()), &options);
        let response = app
            .oneshot(Request::get("/boom").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let body = body_json(response).await;
        assert_eq!(body["error"]["code"], "internal");
        assert_eq!(body["error"]["message"], "internal error");
        assert_eq!(body["error"]["request_id"], id.as_str());
        assert!(!body.to_string().contains("secret detail"));
    }

    /// A route that answers long after any test timeout.
    fn slow_routes() -> Router<AppState> {
        Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
    }

    #[tokio::test]
    async fn slow_requests_time_out_as_unavailable() {
        let routes = slow_routes();
        let options = HttpOptions {
            request_timeout: Duration::from_millis(50),
            ..HttpOptions::default()
        };
        let app = with_layers(routes, kms(), Arc::new(Metrics::new()), &options);
        let response = app
            .oneshot(Request::get("/slow").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key("retry-after"));
        let body = body_json(response).await;
        assert_eq!(body["error"]["code"], "unavailable");
        assert_eq!(body["error"]["retryable"], true);
    }

    #[tokio::test]
    async fn a_refused_body_that_never_ends_is_cut_off_by_the_timeout() {
        let options = HttpOptions {
            request_timeout: Duration::from_millis(50),
            body_limit: 16,
            ..HttpOptions::default()
        };
        let app = with_layers(slow_routes(), kms(), Arc::new(Metrics::new()), &options);
        // Announces more than the limit, sends one chunk, then nothing.
        use futures_util::StreamExt;
        let stalled = futures_util::stream::iter([Ok::<_, std::io::Error>(
            axum::body::Bytes::from_static(b"0123456789"),
        )])
        .chain(futures_util::stream::pending());
        let request = Request::get("/slow")
            .header("content-length", "1000")
            .body(Body::from_stream(stalled))
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body_json(response).await["error"]["code"], "unavailable");
    }

    #[tokio::test]
    async fn every_response_carries_the_security_headers() {
        let app = router(kms(), Arc::new(Metrics::new()), &HttpOptions::default());
        for path in ["/healthz", "/v1/apps", "/nowhere"] {
            let response = app
                .clone()
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            let h = response.headers();
            assert_eq!(h["cache-control"], "no-store", "{path}");
            assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
            assert_eq!(h["x-frame-options"], "DENY", "{path}");
            assert_eq!(h["content-security-policy"], "default-src 'none'", "{path}");
            assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
            assert!(!h.contains_key("strict-transport-security"), "{path}");
            assert!(!h.contains_key("server"), "{path}");
        }
    }

    #[tokio::test]
    async fn timeouts_and_tls_get_the_headers_too() {
        let routes = slow_routes();
        let options = HttpOptions {
            request_timeout: Duration::from_millis(20),
            hsts: true,
            ..HttpOptions::default()
        };
        let app = with_layers(routes, kms(), Arc::new(Metrics::new()), &options);
        let response = app
            .oneshot(Request::get("/slow").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let h = response.headers();
        assert_eq!(h["x-frame-options"], "DENY");
        assert!(h["strict-transport-security"]
            .to_str()
            .unwrap()
            .starts_with("max-age="));
    }
}
