//! The worker's endpoints as the bridge uses them: the link URLs, and the
//! batch publish of SPEC section 2 that carries Kafka records into rooms.

use serde::Serialize;
use serde_json::value::RawValue;

/// The worker's base URLs, from `--worker-url` in either scheme.
#[derive(Debug, Clone)]
pub struct WorkerUrls {
    http: String,
    ws: String,
}

impl WorkerUrls {
    pub fn parse(url: &str) -> Result<WorkerUrls, String> {
        let url = url.trim_end_matches('/');
        let (http, ws) = match url.split_once("://") {
            Some(("http", rest)) | Some(("ws", rest)) => {
                (format!("http://{rest}"), format!("ws://{rest}"))
            }
            Some(("https", rest)) | Some(("wss", rest)) => {
                (format!("https://{rest}"), format!("wss://{rest}"))
            }
            _ => {
                return Err(format!(
                    "--worker-url {url:?} must start with http://, https://, ws:// or wss://"
                ))
            }
        };
        Ok(WorkerUrls { http, ws })
    }

    pub fn room_link(&self, room: &str, instance: &str) -> String {
        format!(
            "{}/v1/rooms/{room}/bridge?instance={}",
            self.ws,
            encode(instance)
        )
    }

    pub fn registry_link(&self, instance: &str) -> String {
        format!("{}/v1/bridge?instance={}", self.ws, encode(instance))
    }

    pub fn messages(&self, room: &str) -> String {
        format!("{}/v1/rooms/{room}/messages", self.http)
    }
}

/// Percent-encodes everything but unreserved characters.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One message of a batch publish; `data` is the record value, verbatim.
#[derive(Serialize)]
pub struct Outgoing<'a> {
    pub data: &'a RawValue,
    pub id: &'a str,
}

/// The body of a batch publish.
#[derive(Serialize)]
pub struct Batch<'a> {
    pub messages: &'a [Outgoing<'a>],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_both_schemes() {
        let u = WorkerUrls::parse("ws://127.0.0.1:8787/").unwrap();
        assert_eq!(u.messages("a"), "http://127.0.0.1:8787/v1/rooms/a/messages");
        assert_eq!(
            u.room_link("a", "x y"),
            "ws://127.0.0.1:8787/v1/rooms/a/bridge?instance=x%20y"
        );
        let s = WorkerUrls::parse("https://rooms.example").unwrap();
        assert_eq!(
            s.registry_link("i"),
            "wss://rooms.example/v1/bridge?instance=i"
        );
        assert!(WorkerUrls::parse("rooms.example").is_err());
    }
}
