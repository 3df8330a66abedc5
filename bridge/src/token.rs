//! The bridge's service token: where it comes from and how it stays fresh.
//!
//! A production bridge never holds a long-lived token. It either mints its
//! own, short-lived (15 minutes by default, never more than a day), from the
//! worker's HS256 secret or, better, from a private key whose public half is
//! all the worker knows; or it reads one that something else issues from a
//! file and re-reads it when the file changes. Either way every holder sees
//! the current token through [`Tokens`]: HTTP requests take it per request,
//! and open links send it to the worker in an `auth` frame when it changes,
//! so nothing reconnects to refresh.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use roomcast_protocol::auth::unverified_expiry;
use roomcast_protocol::clock::now_ms;
use roomcast_protocol::signing::{SigningKey, TokenSpec};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::stop::Stop;

/// The longest lifetime a token the bridge mints may have.
pub const MAX_TTL_SECS: u64 = 86_400;
/// The subject of the bridge's own tokens: the `sender` of Kafka messages.
pub const SUBJECT: &str = "roomcast-bridge";
/// How often a token file is checked for changes.
const FILE_POLL: Duration = Duration::from_secs(2);

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("reading the token file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the token file {0} is empty")]
    Empty(PathBuf),
}

/// A token and when it expires (seconds since the epoch, when readable).
#[derive(Debug, Clone)]
pub struct Token {
    pub jwt: Arc<str>,
    pub exp: Option<u64>,
}

impl Token {
    fn new(jwt: String) -> Token {
        let exp = unverified_expiry(&jwt);
        Token {
            jwt: jwt.into(),
            exp,
        }
    }
}

/// Where the bridge's token comes from.
pub enum TokenSource {
    /// Minted by the bridge with `key`, each lasting `spec.ttl_secs`.
    Minted {
        key: Box<SigningKey>,
        spec: Box<TokenSpec>,
    },
    /// Issued elsewhere and written to a file, re-read when it changes.
    File(PathBuf),
    /// Given on the command line; it cannot be refreshed.
    Fixed(String),
}

impl TokenSource {
    /// The bridge's own tokens: the bridge role, `iss`/`aud` as the worker
    /// checks them, and a lifetime capped at [`MAX_TTL_SECS`].
    pub fn minted(
        key: SigningKey,
        issuer: Option<String>,
        audience: Option<String>,
        ttl_secs: u64,
    ) -> TokenSource {
        TokenSource::Minted {
            key: Box::new(key),
            spec: Box::new(TokenSpec {
                sub: SUBJECT.into(),
                role: Some("bridge".into()),
                iss: issuer,
                aud: audience,
                ttl_secs: ttl_secs.min(MAX_TTL_SECS),
                ..TokenSpec::default()
            }),
        }
    }

    /// Gets the first token now (a missing file is a startup error) and
    /// keeps it fresh until `stop`.
    pub fn start(self, stop: Stop) -> Result<Tokens, TokenError> {
        let first = match &self {
            TokenSource::Minted { key, spec } => Token::new(key.mint(spec, now_ms())),
            TokenSource::File(path) => read_file(path)?,
            TokenSource::Fixed(jwt) => Token::new(jwt.clone()),
        };
        let (tx, rx) = watch::channel(first);
        match self {
            TokenSource::Minted { key, spec } => {
                tokio::spawn(remint(key, spec, tx, stop));
            }
            TokenSource::File(path) => {
                let read = modified(&path);
                tokio::spawn(watch_file(path, read, tx, stop));
            }
            TokenSource::Fixed(_) => {
                if let Some(exp) = rx.borrow().exp {
                    warn!(
                        expires_in_secs = exp.saturating_sub(now_ms() / 1000),
                        "a --token cannot be refreshed; use --token-file, --jwt-key-file or --jwt-secret"
                    );
                }
            }
        }
        Ok(Tokens(rx))
    }
}

/// The bridge's current token, shared by every task.
#[derive(Clone)]
pub struct Tokens(watch::Receiver<Token>);

impl Tokens {
    pub fn current(&self) -> Arc<str> {
        self.0.borrow().jwt.clone()
    }

    /// A receiver that wakes when the token is replaced; the value it sees
    /// first counts as already seen.
    pub fn changes(&self) -> watch::Receiver<Token> {
        let mut rx = self.0.clone();
        rx.mark_unchanged();
        rx
    }
}

/// When a token issued now with `ttl_secs` is replaced: after two thirds
/// of its life, leaving a third for the links to carry the new one.
fn refresh_after(ttl_secs: u64) -> Duration {
    Duration::from_millis(ttl_secs.saturating_mul(1000) * 2 / 3)
}

async fn remint(
    key: Box<SigningKey>,
    spec: Box<TokenSpec>,
    tx: watch::Sender<Token>,
    mut stop: Stop,
) {
    while stop.sleep(refresh_after(spec.ttl_secs)).await {
        let token = Token::new(key.mint(&spec, now_ms()));
        info!(
            exp = token.exp,
            alg = key.algorithm(),
            "minted a fresh token"
        );
        tx.send_replace(token);
    }
}

/// Re-reads `path` whenever its modification time or size differs from
/// what was `seen` when it was last read.
async fn watch_file(
    path: PathBuf,
    mut seen: Option<(SystemTime, u64)>,
    tx: watch::Sender<Token>,
    mut stop: Stop,
) {
    while stop.sleep(FILE_POLL).await {
        let now = modified(&path);
        if now == seen {
            continue;
        }
        seen = now;
        match read_file(&path) {
            Ok(token) if *token.jwt != *tx.borrow().jwt => {
                info!(path = %path.display(), exp = token.exp, "read a new token from the file");
                tx.send_replace(token);
            }
            Ok(_) => {}
            Err(e) => warn!("{e}; keeping the current token"),
        }
    }
}

fn modified(path: &PathBuf) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn read_file(path: &PathBuf) -> Result<Token, TokenError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenError::File {
        path: path.clone(),
        source,
    })?;
    let jwt = text.trim();
    if jwt.is_empty() {
        return Err(TokenError::Empty(path.clone()));
    }
    Ok(Token::new(jwt.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use roomcast_protocol::auth::{Verifier, VerifierConfig};

    #[test]
    fn minted_tokens_carry_the_bridge_role_and_never_outlive_a_day() {
        let source = TokenSource::minted(
            SigningKey::hs256("s"),
            Some("iss".into()),
            Some("aud".into()),
            10 * MAX_TTL_SECS,
        );
        let TokenSource::Minted { key, spec } = source else {
            panic!("minted")
        };
        assert_eq!(spec.ttl_secs, MAX_TTL_SECS);
        let now = now_ms();
        let verifier = Verifier::new(&VerifierConfig {
            hs256_secret: Some("s".into()),
            issuer: Some("iss".into()),
            audience: Some("aud".into()),
            ..VerifierConfig::default()
        })
        .unwrap();
        let identity = verifier.verify(&key.mint(&spec, now), now).unwrap();
        assert!(identity.rights.bridge);
        assert_eq!(identity.sub, SUBJECT);
    }

    #[test]
    fn refreshed_with_a_third_of_the_life_left() {
        assert_eq!(refresh_after(900), Duration::from_secs(600));
        assert_eq!(refresh_after(21), Duration::from_secs(14));
    }

    #[tokio::test]
    async fn a_changed_file_is_read_again() {
        let dir = std::env::temp_dir().join(format!("bridge-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "first\n").unwrap();
        let (trigger, stop) = Stop::new();
        let tokens = TokenSource::File(path.clone()).start(stop).unwrap();
        let mut changes = tokens.changes();
        assert_eq!(&*tokens.current(), "first");
        std::fs::write(&path, "second, a little longer\n").unwrap();
        tokio::time::timeout(Duration::from_secs(10), changes.changed())
            .await
            .expect("the change was noticed")
            .unwrap();
        assert_eq!(&*tokens.current(), "second, a little longer");
        trigger.fire();
        let _ = std::fs::remove_dir_all(dir);
    }
}
