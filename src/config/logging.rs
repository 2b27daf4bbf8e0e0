//! Where the two log streams go: the debug log's format, and the audit log's destination.

use std::path::PathBuf;

use crate::settings::{keys, parse_or, ConfigError, Sources};

/// How the debug log (stderr) is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines, coloured only when stderr is a terminal.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where audit events go, one JSON object per line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuditLogTarget {
    Stdout,
    Stderr,
    Off,
    /// A file to append to.
    File(PathBuf),
}

/// The logging settings, read before anything else so that start-up itself is logged as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggingSettings {
    pub format: LogFormat,
    pub audit: AuditLogTarget,
}

impl LoggingSettings {
    /// Reads `MAILBOX_GATEWAY_LOG_FORMAT` and `MAILBOX_GATEWAY_AUDIT_LOG`.
    pub fn load(sources: &Sources) -> Result<LoggingSettings, ConfigError> {
        let format = parse_or(sources, keys::LOG_FORMAT, "text", |v| match v {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err("must be text or json".into()),
        })?;
        let audit = match sources.get(keys::AUDIT_LOG).map(str::trim) {
            None | Some("stdout") => AuditLogTarget::Stdout,
            Some("stderr") => AuditLogTarget::Stderr,
            Some("off") => AuditLogTarget::Off,
            Some(path) => AuditLogTarget::File(PathBuf::from(path)),
        };
        Ok(LoggingSettings { format, audit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_settings_come_from_the_registry_like_any_other() {
        let load = |pairs: &[(&str, &str)]| {
            LoggingSettings::load(&Sources::from_pairs(pairs.iter().copied()))
        };
        let defaults = load(&[]).unwrap();
        assert_eq!(defaults.format, LogFormat::Text);
        assert_eq!(defaults.audit, AuditLogTarget::Stdout);
        let set = load(&[
            (keys::LOG_FORMAT, "json"),
            (keys::AUDIT_LOG, "/var/log/audit.jsonl"),
        ]);
        assert_eq!(
            set.unwrap(),
            LoggingSettings {
                format: LogFormat::Json,
                audit: AuditLogTarget::File("/var/log/audit.jsonl".into()),
            }
        );
        let error = load(&[(keys::LOG_FORMAT, "yaml")]).unwrap_err().to_string();
        assert!(
            error.contains("MAILBOX_GATEWAY_LOG_FORMAT") && error.contains("text or json"),
            "{error}"
        );
    }
}
