//! HTTPS with rustls (the `ring` provider): the server configuration from PEM files, and a
//! listener that hands the server connections whose TLS handshake has completed.
//!
//! Every connection is admitted by the connection limits ([`crate::http::connections`]) before
//! its handshake starts, and keeps its place while the handshake runs. Handshakes run in
//! their own tasks, each within the handshake timeout (the header read timeout of
//! `kms serve`), so a slow or silent client holds neither the accept loop nor, for long,
//! a place.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;
use crate::http::connections::{accept_admitted, Admitted, ConnectionGate, Incoming};

/// The rustls server configuration for `files`: TLS 1.2 and 1.3, HTTP/1.1, no client
/// certificates. The message of an error names the file and what is wrong with it.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, String> {
    let certs = read_certs(&files.cert)?;
    let key = read_key(&files.key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "the TLS key {} does not suit the certificate {}: {e}",
                files.key.display(),
                files.cert.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// When the (first) certificate of `files` expires, in Unix seconds, for the metrics.
pub fn certificate_expiry(files: &TlsFiles) -> Result<i64, String> {
    use x509_cert::der::Decode;
    let certs = read_certs(&files.cert)?;
    let first = certs.first().ok_or_else(|| "no certificate".to_owned())?;
    let cert = x509_cert::Certificate::from_der(first.as_ref()).map_err(|e| {
        format!(
            "cannot read the TLS certificate {}: {e}",
            files.cert.display()
        )
    })?;
    let not_after = cert.tbs_certificate.validity.not_after.to_unix_duration();
    i64::try_from(not_after.as_secs()).map_err(|_| "the certificate expires too late".to_owned())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bad = |e: &dyn std::fmt::Display| {
        format!("cannot read the TLS certificate {}: {e}", path.display())
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    if certs.is_empty() {
        return Err(bad(&"no PEM certificate (BEGIN CERTIFICATE) in it"));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        format!(
            "cannot read the TLS private key {}: {e} (expected a PEM PKCS#8, PKCS#1 or SEC1 key)",
            path.display()
        )
    })
}

/// Connections whose TLS handshake has completed, for [`crate::http::server::serve`].
#[derive(Debug)]
pub struct TlsListener {
    ready: mpsc::Receiver<Admitted<TlsStream<TcpStream>>>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts TCP connections on `tcp` that `gate` admits and completes their handshakes
    /// with `config`, each within `handshake_timeout`, in a background task that ends when
    /// the listener is dropped. Needs a Tokio runtime.
    pub fn new(
        tcp: TcpListener,
        config: Arc<ServerConfig>,
        gate: Arc<ConnectionGate>,
        handshake_timeout: Duration,
    ) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(accept_loop(tcp, acceptor, gate, handshake_timeout, tx));
        Ok(TlsListener { ready, local })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    gate: Arc<ConnectionGate>,
    handshake_timeout: Duration,
    ready: mpsc::Sender<Admitted<TlsStream<TcpStream>>>,
) {
    loop {
        let admitted = tokio::select! {
            admitted = accept_admitted(&tcp, &gate) => admitted,
            () = ready.closed() => return,
        };
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let Admitted { io, peer, permit } = admitted;
            match tokio::time::timeout(handshake_timeout, acceptor.accept(io)).await {
                Ok(Ok(tls)) => {
                    let _ = ready
                        .send(Admitted {
                            io: tls,
                            peer,
                            permit,
                        })
                        .await;
                }
                Ok(Err(e)) => tracing::debug!(peer = %peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(peer = %peer, "TLS handshake timed out"),
            }
        });
    }
}

impl Incoming for TlsListener {
    type Io = TlsStream<TcpStream>;

    async fn accept(&mut self) -> Admitted<Self::Io> {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop only ends once this listener is gone; never resolve.
            None => std::future::pending().await,
        }
    }
}
