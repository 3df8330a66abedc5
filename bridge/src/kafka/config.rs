//! librdkafka properties the operator passes through: `--kafka-config
//! KEY=VALUE` (repeatable) and `--kafka-config-file PATH`, in the
//! Java-properties format Kafka users already keep their client settings in
//! (TLS, SASL, tuning).
//!
//! They are applied to every client the bridge makes (producer, consumer,
//! admin) after the bridge's own defaults, so any default can be changed;
//! the few properties the delivery guarantee rests on cannot. Values of
//! secret-looking keys never leave this module except into librdkafka:
//! [`KafkaConfig`]'s `Debug` and [`KafkaConfig::describe`] redact them.

use std::fmt;
use std::path::{Path, PathBuf};

use rdkafka::config::ClientConfig;

/// Properties the bridge sets itself because at-least-once delivery depends
/// on them, or because a flag of its own names them.
const OWNED: [(&str, &str); 7] = [
    ("enable.idempotence", "the producer must be idempotent"),
    ("acks", "the producer must wait for all in-sync replicas"),
    (
        "enable.auto.commit",
        "offsets are committed only after delivery",
    ),
    (
        "enable.auto.offset.store",
        "offsets are stored only after delivery",
    ),
    ("bootstrap.servers", "use --brokers"),
    ("group.id", "use --group-id"),
    ("group.instance.id", "use --instance-id"),
];

/// A bad `--kafka-config` or `--kafka-config-file`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--kafka-config-file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: expected KEY=VALUE, got {line:?}")]
    Malformed { origin: String, line: String },
    #[error(
        "{key} is set by the bridge ({why}); remove it from --kafka-config and --kafka-config-file"
    )]
    Owned { key: String, why: &'static str },
}

/// The operator's librdkafka properties, in the order they apply (file
/// first, then flags, the last setting of a key winning).
#[derive(Clone, Default)]
pub struct KafkaConfig {
    properties: Vec<(String, String)>,
}

impl KafkaConfig {
    /// Reads `file` (if any), then the `KEY=VALUE` `pairs`.
    pub fn load(file: Option<&Path>, pairs: &[String]) -> Result<KafkaConfig, ConfigError> {
        let mut properties = Vec::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            properties.extend(parse_properties(&text, &path.display().to_string())?);
        }
        for pair in pairs {
            let (key, value) = pair
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| ConfigError::Malformed {
                    origin: "--kafka-config".into(),
                    line: redact_line(pair),
                })?;
            properties.push((key.to_owned(), value.to_owned()));
        }
        for (key, _) in &properties {
            if let Some((_, why)) = OWNED.iter().find(|(owned, _)| owned == key) {
                return Err(ConfigError::Owned {
                    key: key.clone(),
                    why,
                });
            }
        }
        Ok(KafkaConfig { properties })
    }

    /// Sets every property on `config`, over whatever it had.
    pub fn apply(&self, config: &mut ClientConfig) {
        for (key, value) in &self.properties {
            config.set(key, value);
        }
    }

    /// The value the operator set for `key`, if any (for non-secret keys).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.properties
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `key=value` pairs for the startup log, secrets replaced.
    pub fn describe(&self) -> String {
        self.properties
            .iter()
            .map(|(k, v)| format!("{k}={}", shown(k, v)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.properties.iter().map(|(k, v)| (k, shown(k, v))))
            .finish()
    }
}

/// Does `key` hold a secret? Passwords, client secrets, inline private keys
/// and the free-form SASL configurations that embed them.
fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "jaas", "oauthbearer.config"]
        .iter()
        .any(|s| key.contains(s))
        || key.ends_with(".pem")
        || key.ends_with("token")
}

fn shown<'a>(key: &str, value: &'a str) -> &'a str {
    if is_secret(key) {
        "[redacted]"
    } else {
        value
    }
}

/// A malformed line, with whatever follows a secret-looking key hidden.
fn redact_line(line: &str) -> String {
    if is_secret(line) {
        "[a line naming a secret]".into()
    } else {
        line.to_owned()
    }
}

/// Parses Java-properties text: `key=value`, `key: value` or `key value`;
/// `#` and `!` comments; a trailing backslash continues a line; `\t`, `\n`,
/// `\\` and `\uXXXX` escapes.
fn parse_properties(text: &str, origin: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut properties = Vec::new();
    let mut logical = String::new();
    for raw in text.lines() {
        let line = raw.trim_start();
        if logical.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with('!'))
        {
            continue;
        }
        if ends_in_continuation(line) {
            logical.push_str(&line[..line.len() - 1]);
            continue;
        }
        logical.push_str(line);
        properties.push(split_property(&logical, origin)?);
        logical.clear();
    }
    if !logical.is_empty() {
        properties.push(split_property(&logical, origin)?);
    }
    Ok(properties)
}

/// An odd number of trailing backslashes continues the line.
fn ends_in_continuation(line: &str) -> bool {
    line.chars().rev().take_while(|c| *c == '\\').count() % 2 == 1
}

fn split_property(line: &str, origin: &str) -> Result<(String, String), ConfigError> {
    let mut key = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(escaped) = chars.next() {
                    key.push(unescape(escaped, &mut chars));
                }
            }
            '=' | ':' => break,
            c if c.is_whitespace() => {
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
                if matches!(chars.peek(), Some('=' | ':')) {
                    chars.next();
                }
                break;
            }
            c => key.push(c),
        }
    }
    while chars.peek().is_some_and(|c| c.is_whitespace()) {
        chars.next();
    }
    let mut value = String::new();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(escaped) = chars.next() {
                    value.push(unescape(escaped, &mut chars));
                }
            }
            c => value.push(c),
        }
    }
    if key.is_empty() {
        return Err(ConfigError::Malformed {
            origin: origin.to_owned(),
            line: redact_line(line),
        });
    }
    Ok((key, value))
}

fn unescape(c: char, rest: &mut std::iter::Peekable<std::str::Chars<'_>>) -> char {
    match c {
        't' => '\t',
        'n' => '\n',
        'r' => '\r',
        'f' => '\u{c}',
        'u' => {
            let hex: String = (0..4).filter_map(|_| rest.next()).collect();
            u32::from_str_radix(&hex, 16)
                .ok()
                .and_then(char::from_u32)
                .unwrap_or(char::REPLACEMENT_CHARACTER)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> Vec<(String, String)> {
        parse_properties(text, "test").unwrap()
    }

    #[test]
    fn java_properties() {
        let parsed = file(
            "# comment\n! also a comment\n\nsecurity.protocol=SASL_SSL\n  sasl.mechanisms : SCRAM-SHA-512\nsasl.username alice\nsasl.password=p\\=ss\\\n   word\nssl.ca.location=/etc/ssl/ca.pem\nclient.id=caf\\u00e9\n",
        );
        let get = |k: &str| {
            parsed
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(get("sasl.mechanisms"), Some("SCRAM-SHA-512"));
        assert_eq!(get("sasl.username"), Some("alice"));
        assert_eq!(get("sasl.password"), Some("p=ssword"));
        assert_eq!(get("ssl.ca.location"), Some("/etc/ssl/ca.pem"));
        assert_eq!(get("client.id"), Some("café"));
    }

    #[test]
    fn flags_follow_the_file_and_secrets_never_show() {
        let dir = std::env::temp_dir().join(format!("kafka-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("client.properties");
        std::fs::write(&path, "compression.type=lz4\nsasl.password=hunter2\n").unwrap();
        let config = KafkaConfig::load(
            Some(&path),
            &[
                "compression.type=gzip".into(),
                "sasl.oauthbearer.client.secret=s3cr3t".into(),
            ],
        )
        .unwrap();
        assert_eq!(config.get("compression.type"), Some("gzip"));
        let shown = format!("{} {config:?}", config.describe());
        assert!(shown.contains("compression.type=gzip"), "{shown}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cr3t"),
            "{shown}"
        );
        let mut client = ClientConfig::new();
        config.apply(&mut client);
        assert_eq!(client.get("sasl.password"), Some("hunter2"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_guarantees_cannot_be_overridden() {
        for key in [
            "enable.idempotence",
            "acks",
            "enable.auto.commit",
            "group.id",
        ] {
            let err = KafkaConfig::load(None, &[format!("{key}=x")]).unwrap_err();
            assert!(matches!(err, ConfigError::Owned { .. }), "{key}: {err}");
        }
        let err = KafkaConfig::load(None, &["sasl.password".into()]).unwrap_err();
        assert!(!err.to_string().contains("sasl.password"), "{err}");
    }
}
