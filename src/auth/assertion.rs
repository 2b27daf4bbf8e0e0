//! Signs the client assertions that prove the application's identity with a certificate.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::config::CertificateAlgorithm;

/// How long an assertion is valid; Entra accepts at most 10 minutes.
const ASSERTION_LIFETIME_SECS: u64 = 5 * 60;

/// A certificate and its private key, loaded once at start-up.
#[derive(Clone)]
pub struct CertificateCredential {
    key: EncodingKey,
    algorithm: CertificateAlgorithm,
    /// base64url SHA-256 of the certificate's DER (`x5t#S256`).
    thumbprint_sha256: String,
    /// base64url SHA-1 of the certificate's DER (`x5t`).
    thumbprint_sha1: String,
}

impl std::fmt::Debug for CertificateCredential {
    /// Shows the thumbprint, which is public, and never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateCredential")
            .field("algorithm", &self.algorithm)
            .field("x5t#S256", &self.thumbprint_sha256)
            .finish_non_exhaustive()
    }
}

/// Why a credential could not be loaded at start-up.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("cannot read the credential file {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not PEM: {problem}")]
    NotPem { path: String, problem: String },
    #[error("{path} holds no CERTIFICATE block")]
    NoCertificate { path: String },
    #[error("{path} holds no usable RSA private key (PRIVATE KEY or RSA PRIVATE KEY block)")]
    NoKey { path: String },
}

/// Claims of a client assertion (docs/upstream.md section 6).
#[derive(Serialize)]
struct AssertionClaims<'a> {
    aud: &'a str,
    iss: &'a str,
    sub: &'a str,
    jti: String,
    nbf: u64,
    iat: u64,
    exp: u64,
}

impl CertificateCredential {
    /// Loads a PEM file holding the certificate and its RSA private key.
    pub fn load(path: &Path, algorithm: CertificateAlgorithm) -> Result<Self, CredentialError> {
        let shown = path.display().to_string();
        let text = std::fs::read(path).map_err(|source| CredentialError::Read {
            path: shown.clone(),
            source,
        })?;
        let blocks = pem::parse_many(&text).map_err(|e| CredentialError::NotPem {
            path: shown.clone(),
            // The parser's message names no key material.
            problem: e.to_string(),
        })?;
        let certificate = blocks
            .iter()
            .find(|b| b.tag() == "CERTIFICATE")
            .ok_or_else(|| CredentialError::NoCertificate {
                path: shown.clone(),
            })?;
        let key = blocks
            .iter()
            .filter(|b| matches!(b.tag(), "PRIVATE KEY" | "RSA PRIVATE KEY"))
            .find_map(|b| EncodingKey::from_rsa_pem(pem::encode(b).as_bytes()).ok())
            .ok_or(CredentialError::NoKey { path: shown })?;
        let der = certificate.contents();
        Ok(CertificateCredential {
            key,
            algorithm,
            thumbprint_sha256: URL_SAFE_NO_PAD.encode(Sha256::digest(der)),
            thumbprint_sha1: URL_SAFE_NO_PAD.encode(Sha1::digest(der)),
        })
    }

    /// A fresh signed assertion for `token_url`, as issuer and subject `client_id`.
    pub fn assertion(
        &self,
        token_url: &str,
        client_id: &str,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = match self.algorithm {
            CertificateAlgorithm::Ps256 => Header::new(Algorithm::PS256),
            CertificateAlgorithm::Rs256 => Header::new(Algorithm::RS256),
        };
        match self.algorithm {
            CertificateAlgorithm::Ps256 => header.x5t_s256 = Some(self.thumbprint_sha256.clone()),
            CertificateAlgorithm::Rs256 => header.x5t = Some(self.thumbprint_sha1.clone()),
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let claims = AssertionClaims {
            aud: token_url,
            iss: client_id,
            sub: client_id,
            jti: uuid::Uuid::new_v4().to_string(),
            nbf: now,
            iat: now,
            exp: now + ASSERTION_LIFETIME_SECS,
        };
        jsonwebtoken::encode(&header, &claims, &self.key)
    }
}
