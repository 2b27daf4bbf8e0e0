//! The Graph tenant the gateway writes into: who the app is there, its credential, and the endpoints.

use std::path::PathBuf;

use secrecy::SecretString;
use url::Url;

use super::{DEFAULT_AUTHORITY_HOST, DEFAULT_GRAPH_URL, DEFAULT_IMPORT_HOSTS};
use crate::settings::{keys, parse_base_url, parse_or, ConfigError, Sources};

/// Everything specific to one tenant: who we are there and where its endpoints live.
///
/// Kept in one value, not in globals, so that several tenants can later sit behind one gateway.
#[derive(Clone, Debug)]
pub struct TenantConfig {
    /// Entra ID tenant id.
    pub tenant_id: String,
    /// Application (client) id.
    pub client_id: String,
    /// How the application proves who it is.
    pub credential: CredentialConfig,
    /// Entra ID authority host, e.g. `https://login.microsoftonline.com`.
    pub authority_host: Url,
    /// Graph base URL, e.g. `https://graph.microsoft.com/v1.0`.
    pub graph_url: Url,
    /// Origins that an `importUrl` may point to.
    pub import_hosts: ImportHosts,
}

/// The application credential, as configured.
#[derive(Clone, Debug)]
pub enum CredentialConfig {
    /// `AZURE_CLIENT_SECRET`.
    Secret(SecretString),
    /// `AZURE_CLIENT_CERTIFICATE_PATH`, signed with the given algorithm.
    Certificate {
        path: PathBuf,
        algorithm: CertificateAlgorithm,
    },
    /// `AZURE_FEDERATED_TOKEN_FILE`, re-read on every token request.
    FederatedTokenFile(PathBuf),
}

/// How a certificate assertion is signed and which thumbprint names the certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertificateAlgorithm {
    /// `PS256` with `x5t#S256` (the current Entra documentation).
    Ps256,
    /// `RS256` with `x5t` (older documentation and many SDKs).
    Rs256,
}

/// The origins (scheme, host, port) that an `importUrl` may point to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportHosts(Vec<url::Origin>);

impl ImportHosts {
    /// Parses a comma-separated list. A bare host means `https://host:443`; an entry with a scheme, like
    /// `http://127.0.0.1:9000`, allows exactly that origin.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut origins = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let with_scheme = if entry.contains("://") {
                entry.to_owned()
            } else {
                format!("https://{entry}")
            };
            let url =
                Url::parse(&with_scheme).map_err(|e| format!("`{entry}` is not a host: {e}"))?;
            if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
                return Err(format!("`{entry}` is not an http(s) origin"));
            }
            if url.path() != "/" || url.query().is_some() {
                return Err(format!("`{entry}` must be an origin, without a path"));
            }
            origins.push(url.origin());
        }
        if origins.is_empty() {
            return Err("the list is empty".into());
        }
        Ok(ImportHosts(origins))
    }

    /// Whether `url`'s origin is one of the allowed ones.
    pub fn allows(&self, url: &Url) -> bool {
        let origin = url.origin();
        self.0.contains(&origin)
    }
}

impl TenantConfig {
    /// Reads the tenant, its credential and its endpoints from `sources`.
    pub fn load(sources: &Sources) -> Result<TenantConfig, ConfigError> {
        let secret = sources.get(keys::AZURE_CLIENT_SECRET);
        let certificate = sources.get(keys::AZURE_CLIENT_CERTIFICATE_PATH);
        let federated = sources.get(keys::AZURE_FEDERATED_TOKEN_FILE);
        let tenant_id = sources.get(keys::AZURE_TENANT_ID);
        let client_id = sources.get(keys::AZURE_CLIENT_ID);
        let credentials = [secret.is_some(), certificate.is_some(), federated.is_some()];
        let (Some(tenant_id), Some(client_id)) = (tenant_id, client_id) else {
            return Err(ConfigError::NoCredential);
        };
        let credential = match (secret, certificate, federated) {
            (None, None, None) => return Err(ConfigError::NoCredential),
            _ if credentials.iter().filter(|set| **set).count() > 1 => {
                return Err(ConfigError::Invalid {
                    key: keys::AZURE_CLIENT_SECRET,
                    problem:
                        "set exactly one of AZURE_CLIENT_SECRET, AZURE_CLIENT_CERTIFICATE_PATH \
                              and AZURE_FEDERATED_TOKEN_FILE"
                            .into(),
                })
            }
            (Some(secret), _, _) => CredentialConfig::Secret(SecretString::from(secret.to_owned())),
            (_, Some(path), _) => CredentialConfig::Certificate {
                path: PathBuf::from(path),
                algorithm: parse_or(sources, keys::CERTIFICATE_ALGORITHM, "PS256", |v| {
                    match v.to_ascii_uppercase().as_str() {
                        "PS256" => Ok(CertificateAlgorithm::Ps256),
                        "RS256" => Ok(CertificateAlgorithm::Rs256),
                        _ => Err("must be PS256 or RS256".into()),
                    }
                })?,
            },
            (_, _, Some(path)) => CredentialConfig::FederatedTokenFile(PathBuf::from(path)),
        };
        if !is_directory_id(tenant_id) {
            return Err(ConfigError::Invalid {
                key: keys::AZURE_TENANT_ID,
                problem: "must be a tenant GUID or domain name (letters, digits, '-', '.')".into(),
            });
        }
        Ok(TenantConfig {
            tenant_id: tenant_id.to_owned(),
            client_id: client_id.to_owned(),
            credential,
            authority_host: parse_or(
                sources,
                keys::AZURE_AUTHORITY_HOST,
                DEFAULT_AUTHORITY_HOST,
                parse_base_url,
            )?,
            graph_url: parse_or(sources, keys::GRAPH_URL, DEFAULT_GRAPH_URL, parse_base_url)?,
            import_hosts: parse_or(
                sources,
                keys::IMPORT_HOSTS,
                DEFAULT_IMPORT_HOSTS,
                ImportHosts::parse,
            )?,
        })
    }
}

/// Tenant ids go into the token URL's path, so only plain GUID or domain characters are allowed.
fn is_directory_id(id: &str) -> bool {
    id.len() <= 253
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

impl TenantConfig {
    /// What delegated mode expects of callers' tokens by default: issued by this tenant's Entra ID
    /// (v2.0), signed with its JWKS, for this app.
    pub fn user_token_defaults(&self) -> crate::access::UserTokenDefaults {
        let base = self.authority_host.as_str().trim_end_matches('/');
        let tenant = &self.tenant_id;
        crate::access::UserTokenDefaults {
            issuer: format!("{base}/{tenant}/v2.0"),
            jwks_url: Url::parse(&format!("{base}/{tenant}/discovery/v2.0/keys"))
                .expect("the authority host is an http(s) URL"),
            client_id: self.client_id.clone(),
        }
    }
}
