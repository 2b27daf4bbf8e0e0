//! The operators' commands beside `serve` and `simulator`: `restore` a tree of item streams through a
//! gateway, `export` a folder from one, `inspect` an item stream, and write a `sample` item.
//!
//! Each command is one file, with its arguments (clap) and a `run` that returns the process's exit
//! status: 0 when everything succeeded, 1 when something failed, 2 for usage errors (clap's own).
//! They talk to a gateway only over its HTTP API, as any client would.

pub mod export;
pub mod inspect;
pub mod progress;
pub mod restore;
pub mod sample;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use secrecy::SecretString;

/// The environment variable a command reads the gateway API key from when no `--api-key-file` is given.
pub const API_KEY_ENV: &str = "MAILBOX_GATEWAY_API_KEY";

/// Where `restore` and `export` talk to: a gateway, a mailbox's folder there, and the client's API key.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// The gateway's base URL, such as http://127.0.0.1:8080.
    #[arg(long)]
    pub gateway: String,
    /// The mailbox: an address or a mailbox id.
    #[arg(long)]
    pub mailbox: String,
    /// The folder: a well-known name such as inbox, or a folder id.
    #[arg(long)]
    pub folder: String,
    /// A file whose first line is the gateway API key (else MAILBOX_GATEWAY_API_KEY, else none).
    #[arg(long)]
    pub api_key_file: Option<PathBuf>,
}

/// A [`Target`] checked and ready to use.
pub struct Opened {
    /// An HTTP client that sends the API key, if there is one.
    pub client: reqwest::Client,
    /// The mailbox and folder as the gateway reads them (addresses and well-known names in lower case).
    pub mailbox: String,
    pub folder: String,
    /// `{gateway}/v1/mailboxes/{mailbox}/folders/{folder}`, each segment percent-encoded.
    pub folder_url: String,
}

impl Target {
    /// Reads the API key and checks the mailbox and folder as the gateway would, so that a usage error
    /// costs no request.
    pub fn open(&self) -> Result<Opened, Failure> {
        let key = api_key(self.api_key_file.as_deref())?;
        let (mailbox, folder) = target(&self.mailbox, &self.folder)?;
        Ok(Opened {
            client: gateway_client(key.as_ref()),
            folder_url: folder_url(&self.gateway, &mailbox, &folder),
            mailbox,
            folder,
        })
    }
}

/// The client's API key: from `file` (its first line, trimmed), else from `MAILBOX_GATEWAY_API_KEY`,
/// else none (a gateway without authentication). Never printed.
fn api_key(file: Option<&Path>) -> Result<Option<SecretString>, Failure> {
    if let Some(file) = file {
        let text = std::fs::read_to_string(file).map_err(|e| {
            Failure::Usage(format!(
                "cannot read the API key file {}: {e}",
                file.display()
            ))
        })?;
        let key = text.lines().next().unwrap_or("").trim();
        if key.is_empty() {
            return Err(Failure::Usage(format!(
                "the API key file {} is empty",
                file.display()
            )));
        }
        return Ok(Some(SecretString::from(key.to_owned())));
    }
    Ok(std::env::var(API_KEY_ENV)
        .ok()
        .filter(|key| !key.trim().is_empty())
        .map(|key| SecretString::from(key.trim().to_owned())))
}

/// Why a command stopped: a usage error (exit status 2) or a failure (exit status 1).
#[derive(Debug)]
pub enum Failure {
    Usage(String),
    Run(String),
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure::Run(message)
    }
}

impl Failure {
    /// Says why on stderr and gives the exit status.
    pub fn exit(self) -> ExitCode {
        let (status, message) = match self {
            Failure::Usage(message) => (2, message),
            Failure::Run(message) => (1, message),
        };
        eprintln!("error: {message}");
        ExitCode::from(status)
    }
}

/// The mailbox and folder as the gateway reads them (addresses and well-known names in lower case), or
/// why the gateway would refuse them.
fn target(mailbox: &str, folder: &str) -> Result<(String, String), Failure> {
    let mailbox = crate::ids::MailboxRef::parse(mailbox)
        .map_err(|e| Failure::Usage(format!("--mailbox: {e}")))?;
    let folder = crate::ids::FolderRef::parse(folder)
        .map_err(|e| Failure::Usage(format!("--folder: {e}")))?;
    Ok((mailbox.to_string(), folder.to_string()))
}

/// The HTTP client the commands use to reach a gateway, sending the API key (if any) as a bearer token.
fn gateway_client(key: Option<&SecretString>) -> reqwest::Client {
    use secrecy::ExposeSecret;
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = key {
        let mut value =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {}", key.expose_secret()))
                .expect("an API key is a valid header value");
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .user_agent(concat!("mailbox-gateway-cli/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client's TLS set-up is static")
}

/// A gateway's problem answer in one line: `503 upstream_throttled: <detail>`.
pub fn problem_text(status: reqwest::StatusCode, body: &serde_json::Value) -> String {
    format!(
        "{} {}: {}",
        status.as_u16(),
        body["code"].as_str().unwrap_or("error"),
        body["detail"].as_str().unwrap_or("(no detail)")
    )
}

/// `/v1/mailboxes/{mailbox}/folders/{folder}` on `gateway`, each segment percent-encoded.
fn folder_url(gateway: &str, mailbox: &str, folder: &str) -> String {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    format!(
        "{}/v1/mailboxes/{}/folders/{}",
        gateway.trim_end_matches('/'),
        utf8_percent_encode(mailbox, NON_ALPHANUMERIC),
        utf8_percent_encode(folder, NON_ALPHANUMERIC),
    )
}
