//! Raw settings: a TOML file merged with the process environment, and the parsers every setting uses.

use std::collections::BTreeMap;
use std::path::Path;

use super::keys::KEYS;
use super::ConfigError;

/// Raw key/value settings, merged from a file and the environment (the environment wins).
#[derive(Clone, Debug, Default)]
pub struct Sources {
    values: BTreeMap<String, String>,
}

impl Sources {
    /// Settings from the given key/value pairs (tests use this instead of the process environment).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Sources {
            values: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// Settings from an optional TOML file, overridden by the process environment.
    pub fn from_process(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut sources = match file {
            Some(path) => Sources::from_toml_file(path)?,
            None => Sources::default(),
        };
        for (key, _) in KEYS {
            if let Ok(value) = std::env::var(key) {
                sources.values.insert((*key).to_owned(), value);
            }
        }
        Ok(sources)
    }

    /// Settings from a TOML file of `KEY = value` lines, with the same keys as the environment.
    pub fn from_toml_file(path: &Path) -> Result<Self, ConfigError> {
        let file_error = |problem: String| ConfigError::File {
            path: path.to_owned(),
            problem,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            if looks_like_an_env_file(&text) {
                file_error(
                    "--config takes a TOML file, with quoted strings (MAILBOX_GATEWAY_AUTH = \"api-key\"), \
                     and this looks like an environment file (KEY=value); quote the values, or load it \
                     into the environment instead (systemd EnvironmentFile=, docker --env-file)"
                        .into(),
                )
            } else {
                file_error(e.to_string())
            }
        })?;
        let mut values = BTreeMap::new();
        for (key, value) in table {
            if !KEYS.iter().any(|(known, _)| *known == key) {
                let hint = nearest_key(&key)
                    .map(|known| format!("; did you mean {known}?"))
                    .unwrap_or_default();
                return Err(file_error(format!("unknown key {key}{hint}")));
            }
            let value = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                other => {
                    return Err(file_error(format!(
                        "{key} must be a string or an integer, not {}",
                        other.type_str()
                    )))
                }
            };
            values.insert(key, value);
        }
        Ok(Sources { values })
    }

    /// Overrides one setting (for command-line flags).
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.values.insert(key.to_owned(), value.into());
    }

    /// The value of `key`, if it is set and not blank.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.values
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }
}

/// Whether a file that is not TOML has lines like `KEY=value` with an unquoted value.
fn looks_like_an_env_file(text: &str) -> bool {
    text.lines().map(str::trim).any(|line| {
        line.split_once('=').is_some_and(|(key, value)| {
            let value = value.trim();
            key.trim()
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
                && !value.is_empty()
                && !value.starts_with(['"', '\''])
        })
    })
}

/// The registered key closest to `unknown` (by edit distance, ignoring case), if it is close enough to
/// be a typo.
fn nearest_key(unknown: &str) -> Option<&'static str> {
    let unknown = unknown.to_ascii_uppercase();
    KEYS.iter()
        .map(|(known, _)| (edit_distance(&unknown, known), *known))
        .filter(|(distance, known)| *distance <= 3.max(known.len() / 6))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, known)| known)
}

/// Levenshtein distance between two ASCII strings.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

pub(crate) fn parse_or<T>(
    sources: &Sources,
    key: &'static str,
    default: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    let value = sources.get(key).unwrap_or(default);
    parse(value.trim()).map_err(|problem| ConfigError::Invalid { key, problem })
}

/// A whole number of at least 1 (bytes, seconds).
pub(crate) fn positive(
    sources: &Sources,
    key: &'static str,
    default: u64,
) -> Result<u64, ConfigError> {
    match sources.get(key) {
        None => Ok(default),
        Some(value) => match value.trim().parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(ConfigError::Invalid {
                key,
                problem: format!("`{value}` is not a whole number of at least 1"),
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (tempfile::NamedTempFile, Result<Sources, ConfigError>) {
        use std::io::Write;
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        let loaded = Sources::from_toml_file(file.path());
        (file, loaded)
    }

    #[test]
    fn an_unknown_key_gets_the_nearest_known_one() {
        let (_file, loaded) = file("MAILBOX_GATEWAY_LISTN = \"127.0.0.1:1\"\n");
        let message = loaded.unwrap_err().to_string();
        assert!(
            message.contains(
                "unknown key MAILBOX_GATEWAY_LISTN; did you mean MAILBOX_GATEWAY_LISTEN?"
            ),
            "{message}"
        );
        let (_file, loaded) = file("SOMETHING_ELSE_ENTIRELY = 1\n");
        let message = loaded.unwrap_err().to_string();
        assert!(!message.contains("did you mean"), "{message}");
    }

    #[test]
    fn an_environment_file_given_as_config_says_which_format_is_expected() {
        let (_file, loaded) =
            file("MAILBOX_GATEWAY_AUTH=api-key\nMAILBOX_GATEWAY_LISTEN=0.0.0.0:8080\n");
        let message = loaded.unwrap_err().to_string();
        assert!(message.contains("--config takes a TOML file"), "{message}");
        assert!(message.contains("environment file"), "{message}");
    }
}
