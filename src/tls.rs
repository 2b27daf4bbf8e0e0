//! Serves HTTPS from a certificate and key file, and picks up new files without a restart.
//!
//! The certificate in use sits behind an `ArcSwap`, which every handshake reads without a lock. A
//! background task checks the files' modification times every `reload_every` and swaps in the new pair
//! once it loads cleanly; a broken new pair is logged and the old one stays in use. ALPN offers HTTP/2
//! and HTTP/1.1.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsSettings;

/// Why the certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS certificate {path}: {problem}")]
    Certificate { path: String, problem: String },
    #[error("cannot read the TLS private key {path}: {problem}")]
    Key { path: String, problem: String },
    #[error("the TLS set-up failed: {0}")]
    Setup(String),
}

/// The certificate in use, replaced when its files change.
#[derive(Debug)]
struct ReloadingCertificate {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// An acceptor for the configured files, and the task that reloads them (stopped when the runtime ends).
pub fn acceptor(settings: &TlsSettings) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = Arc::new(ReloadingCertificate {
        current: ArcSwap::from_pointee(load(settings, &provider)?),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio::spawn(reload_when_changed(settings.clone(), resolver, provider));
    Ok(TlsAcceptor::from(Arc::new(config)))
}

async fn reload_when_changed(
    settings: TlsSettings,
    resolver: Arc<ReloadingCertificate>,
    provider: Arc<rustls::crypto::CryptoProvider>,
) {
    let mut seen = modified(&settings);
    let mut ticks = tokio::time::interval(settings.reload_every);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let now = modified(&settings);
        if now == seen {
            continue;
        }
        match load(&settings, &provider) {
            Ok(key) => {
                resolver.current.store(Arc::new(key));
                seen = now;
                tracing::info!(certificate = %settings.cert_path.display(), "reloaded the TLS certificate");
            }
            // Keep serving the old pair; a half-written file will load on a later tick.
            Err(error) => {
                tracing::warn!(%error, "the changed TLS files could not be loaded; keeping the old ones")
            }
        }
    }
}

fn modified(settings: &TlsSettings) -> (Option<SystemTime>, Option<SystemTime>) {
    let time = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    (time(&settings.cert_path), time(&settings.key_path))
}

fn load(
    settings: &TlsSettings,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let cert_error = |problem: String| TlsError::Certificate {
        path: settings.cert_path.display().to_string(),
        problem,
    };
    let key_error = |problem: String| TlsError::Key {
        path: settings.key_path.display().to_string(),
        problem,
    };
    let chain = CertificateDer::pem_file_iter(&settings.cert_path)
        .map_err(|e| cert_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_error("no CERTIFICATE block".into()));
    }
    // The parser's errors name no key material.
    let key =
        PrivateKeyDer::from_pem_file(&settings.key_path).map_err(|e| key_error(e.to_string()))?;
    let key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| key_error(e.to_string()))?;
    let certified = CertifiedKey::new(chain, key);
    certified
        .keys_match()
        .map_err(|e| key_error(format!("does not match the certificate: {e}")))?;
    Ok(certified)
}
