//! Where RabbitMQ is and who the bridge is to it: `--amqp-url`
//! (`amqp://` or `amqps://`, user, host, port, vhost, and lapin's query
//! parameters such as `heartbeat`) and `--amqp-password-file`, which keeps
//! the password out of the URL the way `--kafka-config-file` keeps Kafka's
//! SASL password out of the command line.
//!
//! The URL is secret as long as it may carry a password, so it is held as
//! an [`AmqpUrl`] whose `Debug` and `Display` hide the password: the startup
//! log, `/healthz` and every error say [`redact`]'s form of it, never the
//! text the operator gave. lapin's own `AMQPUri` prints the password in
//! both, so it never leaves [`Target`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use lapin::uri::{AMQPScheme, AMQPUri};

/// Seconds between AMQP heartbeats unless the URL says otherwise
/// (`?heartbeat=N`): a broker that stops answering is noticed within two
/// of them, where RabbitMQ's default (60 s) would take minutes.
pub const DEFAULT_HEARTBEAT_SECS: u16 = 10;

/// A bad `--amqp-url` or `--amqp-password-file`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--amqp-url {url}: {reason}")]
    Url { url: String, reason: String },
    #[error("--amqp-password-file {path}: {reason}")]
    PasswordFile { path: PathBuf, reason: String },
}

/// `--amqp-url` as the operator gave it; shown only with its password
/// hidden.
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpUrl(String);

impl FromStr for AmqpUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<AmqpUrl, String> {
        parse(text)?;
        Ok(AmqpUrl(text.to_owned()))
    }
}

impl fmt::Display for AmqpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

impl fmt::Debug for AmqpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AmqpUrl({})", redact(&self.0))
    }
}

/// Parses `text` as lapin does, with errors that never repeat it (lapin's
/// own may quote the whole URL, password and all).
fn parse(text: &str) -> Result<(AMQPUri, String), String> {
    let uri = AMQPUri::from_str(text).map_err(|e| {
        if e.contains(text) {
            "not an amqp:// or amqps:// URL".to_owned()
        } else {
            e
        }
    })?;
    let host = host(text).ok_or("no host")?;
    Ok((uri, host))
}

/// The host of `url` exactly as written (`127.0.0.1`, `[::1]` without its
/// brackets, `rabbit.example.com`). lapin's parser keeps only domain names
/// and puts `localhost` in place of an IP address, which would dial
/// another address (and check the certificate against another name) than
/// the operator wrote.
fn host(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split_once(']')?.0,
        None => host_port.split(':').next()?,
    };
    (!host.is_empty()).then(|| host.to_owned())
}

/// `url` with the password of its user info replaced by `[redacted]`:
/// what logs, errors and `/healthz` may show.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // Not a URL at all: it could be anything, a pasted password too.
        return "[not a URL]".into();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:[redacted]@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// The broker to dial: lapin's URI (credentials included) and the host as
/// the operator wrote it. `Debug` shows the redacted URL only.
#[derive(Clone)]
pub struct Target {
    uri: AMQPUri,
    host: String,
    shown: String,
}

impl Target {
    /// `url`, with the password from `password_file` (its first line) in
    /// place of the URL's when given, and a heartbeat of
    /// [`DEFAULT_HEARTBEAT_SECS`] unless the URL sets one.
    pub fn load(url: &AmqpUrl, password_file: Option<&Path>) -> Result<Target, ConfigError> {
        let (mut uri, host) = parse(&url.0).map_err(|reason| ConfigError::Url {
            url: url.to_string(),
            reason,
        })?;
        if let Some(path) = password_file {
            let fail = |reason: String| ConfigError::PasswordFile {
                path: path.to_owned(),
                reason,
            };
            let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
            let password = text.lines().next().unwrap_or_default();
            if password.is_empty() {
                return Err(fail("is empty".into()));
            }
            uri.authority.userinfo.password = password.to_owned();
        }
        uri.query.heartbeat.get_or_insert(DEFAULT_HEARTBEAT_SECS);
        Ok(Target {
            uri,
            host,
            shown: url.to_string(),
        })
    }

    pub fn uri(&self) -> &AMQPUri {
        &self.uri
    }

    /// The host to dial and to check the certificate against.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.uri.authority.port
    }

    /// `amqps://`: TLS, with the bridge's trust (`crate::tls`).
    pub fn is_tls(&self) -> bool {
        self.uri.scheme == AMQPScheme::AMQPS
    }

    pub fn username(&self) -> &str {
        &self.uri.authority.userinfo.username
    }

    /// The URL for logs and `/healthz`, password hidden.
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Target({})", self.shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cr3t-never-shown";

    #[test]
    fn the_password_is_redacted_wherever_the_url_is_shown() {
        let text = format!("amqps://bridge:{SECRET}@rabbit.example.com:5671/roomcast?heartbeat=5");
        assert_eq!(
            redact(&text),
            "amqps://bridge:[redacted]@rabbit.example.com:5671/roomcast?heartbeat=5"
        );
        let url: AmqpUrl = text.parse().unwrap();
        let target = Target::load(&url, None).unwrap();
        let shown = format!("{url} {url:?} {target:?} {}", target.shown());
        assert!(!shown.contains(SECRET), "{shown}");
        assert_eq!(target.uri().authority.userinfo.password, SECRET);
        // Nothing to hide: shown as given.
        assert_eq!(
            redact("amqp://127.0.0.1:5672/%2f"),
            "amqp://127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("amqp://user@h/v"), "amqp://user@h/v");
        // An `@` in the path is not user info; one in the password is.
        assert_eq!(redact("amqp://h/v@x"), "amqp://h/v@x");
        assert_eq!(redact("amqp://u:p@ss@h:1/v"), "amqp://u:[redacted]@h:1/v");
        assert_eq!(redact(SECRET), "[not a URL]");
    }

    #[test]
    fn a_bad_url_is_refused_without_repeating_it() {
        let err = format!("no-scheme-{SECRET}")
            .parse::<AmqpUrl>()
            .unwrap_err();
        assert!(!err.contains(SECRET), "{err}");
        let err = format!("http://u:{SECRET}@h/")
            .parse::<AmqpUrl>()
            .unwrap_err();
        assert!(!err.contains(SECRET), "{err}");
    }

    #[test]
    fn the_host_is_dialled_as_written() {
        let target = |url: &str| Target::load(&url.parse().unwrap(), None).unwrap();
        let local = target("amqps://127.0.0.1:5999/%2f");
        assert_eq!(
            (local.host(), local.port(), local.is_tls()),
            ("127.0.0.1", 5999, true)
        );
        let v6 = target("amqp://u:p@[::1]/v");
        assert_eq!((v6.host(), v6.port(), v6.is_tls()), ("::1", 5672, false));
        let named = target("amqp://rabbit.example.com");
        assert_eq!(named.host(), "rabbit.example.com");
        assert_eq!(named.username(), "guest", "lapin's default user");
        assert_eq!(named.uri().query.heartbeat, Some(DEFAULT_HEARTBEAT_SECS));
        assert_eq!(
            target("amqp://h/?heartbeat=3").uri().query.heartbeat,
            Some(3)
        );
    }

    #[test]
    fn a_password_file_replaces_the_urls_password() {
        let dir = std::env::temp_dir().join(format!("amqp-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("password");
        std::fs::write(&path, format!("{SECRET}\n")).unwrap();
        let url: AmqpUrl = "amqps://bridge@rabbit:5671/roomcast".parse().unwrap();
        let target = Target::load(&url, Some(&path)).unwrap();
        assert_eq!(target.uri().authority.userinfo.password, SECRET);
        assert_eq!(target.username(), "bridge");
        assert!(!format!("{target:?}").contains(SECRET));

        std::fs::write(&path, "\n").unwrap();
        let err = Target::load(&url, Some(&path)).unwrap_err();
        assert!(err.to_string().contains("is empty"), "{err}");
        let err = Target::load(&url, Some(&dir.join("missing"))).unwrap_err();
        assert!(err.to_string().contains("--amqp-password-file"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
