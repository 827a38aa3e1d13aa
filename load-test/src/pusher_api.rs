//! Publishing through Pusher's HTTP API (`POST /apps/{id}/batch_events`),
//! signed as Pusher specifies: HMAC-SHA256, keyed by the app secret, over
//! the method, the path and the sorted query (`auth_key`, `auth_timestamp`,
//! `auth_version=1.0`, `body_md5`), hex encoded.
//!
//! Sockudo answers every API request with `Connection: close`, so each
//! request opens a connection of its own. Requests run concurrently, at most
//! [`MAX_IN_FLIGHT`] at a time, so one slow answer does not hold back the
//! next batch, but never two with a tick of the same symbol: a symbol's
//! ticks reach the server in the order of their `seq`, or the clients would
//! count the overtaken ones as lost and then duplicated. The publisher waits
//! when a request cannot start yet.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use hmac::{Hmac, KeyInit as _, Mac as _};
use md5::{Digest as _, Md5};
use sha2::Sha256;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::publisher::Sent;

/// Requests in flight at once.
pub const MAX_IN_FLIGHT: usize = 16;
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// An app's id, key and secret.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub app_id: String,
    pub key: String,
    pub secret: String,
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// `body_md5`: the MD5 of the request body, hex.
pub fn body_md5(body: &[u8]) -> String {
    hex(&Md5::digest(body))
}

/// `auth_signature` for `method`, `path` and `query` (already sorted by key,
/// lowercase keys, not URL-escaped, without `auth_signature`).
pub fn signature(secret: &str, method: &str, path: &str, query: &str) -> String {
    // HMAC takes a key of any length.
    let mut mac = <Hmac<Sha256>>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    mac.update(method.as_bytes());
    mac.update(b"\n");
    mac.update(path.as_bytes());
    mac.update(b"\n");
    mac.update(query.as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// The full query string of a signed `POST` of `body` to `path` at `timestamp`
/// (seconds since the epoch).
pub fn signed_query(creds: &Credentials, path: &str, body: &[u8], timestamp: u64) -> String {
    // Already in key order: auth_key < auth_timestamp < auth_version < body_md5.
    let query = format!(
        "auth_key={}&auth_timestamp={timestamp}&auth_version=1.0&body_md5={}",
        creds.key,
        body_md5(body)
    );
    let sig = signature(&creds.secret, "POST", path, &query);
    format!("{query}&auth_signature={sig}")
}

/// Appends `s` as a JSON string (quoted, escaped).
fn push_json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for &c in s.as_bytes() {
        match c {
            b'"' => out.extend_from_slice(br#"\""#),
            b'\\' => out.extend_from_slice(br"\\"),
            c if c < 0x20 => out.extend_from_slice(format!("\\u{c:04x}").as_bytes()),
            c => out.push(c),
        }
    }
    out.push(b'"');
}

/// A `batch_events` body: each event is `(channel, data)`, named `tick`,
/// `data` sent as a string as Pusher requires.
pub fn batch_body<'a>(events: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    out.extend_from_slice(br#"{"batch":["#);
    for (i, (channel, data)) in events.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"channel":"#);
        push_json_string(&mut out, channel);
        out.extend_from_slice(br#","name":""#);
        out.extend_from_slice(crate::pusher::TICK_EVENT.as_bytes());
        out.extend_from_slice(br#"","data":"#);
        push_json_string(&mut out, data);
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    out
}

/// Publishes `batch_events` requests, a bounded number at a time.
pub struct PusherPublisher {
    client: reqwest::Client,
    /// `http://host:port`.
    base: reqwest::Url,
    path: String,
    creds: Credentials,
    in_flight: JoinSet<Sent>,
    /// Requests in flight per symbol index.
    busy: Vec<u32>,
}

impl PusherPublisher {
    /// A publisher to the server at `base` (its scheme, host and port are used).
    pub fn new(base: &reqwest::Url, creds: Credentials) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            // The server closes every API connection: never reuse one.
            .pool_max_idle_per_host(0)
            .build()
            .context("cannot build the HTTP client")?;
        let mut base = base.clone();
        base.set_scheme("http")
            .map_err(|_| anyhow::anyhow!("cannot derive the HTTP API URL from {base}"))?;
        base.set_path("/");
        base.set_query(None);
        Ok(Self {
            client,
            base,
            path: format!("/apps/{}/batch_events", creds.app_id),
            creds,
            in_flight: JoinSet::new(),
            busy: Vec::new(),
        })
    }

    /// Starts one request for `body` carrying the ticks of `symbols` (their
    /// indexes), first waiting for a free slot and for every earlier request
    /// with one of these symbols. Returns the requests that finished meanwhile.
    pub async fn submit(&mut self, body: Vec<u8>, symbols: Vec<usize>) -> Vec<Sent> {
        let mut done = Vec::new();
        while let Some(r) = self.in_flight.try_join_next() {
            done.push(self.joined(r));
        }
        if let Some(&max) = symbols.iter().max() {
            if self.busy.len() <= max {
                self.busy.resize(max + 1, 0);
            }
        }
        while self.in_flight.len() >= MAX_IN_FLIGHT || symbols.iter().any(|&s| self.busy[s] > 0) {
            match self.in_flight.join_next().await {
                Some(r) => done.push(self.joined(r)),
                None => break,
            }
        }
        for &s in &symbols {
            self.busy[s] += 1;
        }
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let query = signed_query(&self.creds, &self.path, &body, timestamp);
        let mut url = self.base.clone();
        url.set_path(&self.path);
        url.set_query(Some(&query));
        let request = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .body(body);
        self.in_flight.spawn(async move {
            let started = Instant::now();
            let result = async {
                let resp = request.send().await?;
                let status = resp.status();
                if !status.is_success() {
                    let text = resp.text().await.unwrap_or_default();
                    anyhow::bail!("batch_events answered {status}: {text}");
                }
                Ok(())
            }
            .await;
            Sent {
                symbols,
                result,
                took: started.elapsed(),
            }
        });
        done
    }

    /// Waits for every request in flight.
    pub async fn finish(&mut self) -> Vec<Sent> {
        let mut done = Vec::new();
        while let Some(r) = self.in_flight.join_next().await {
            done.push(self.joined(r));
        }
        done
    }

    /// A finished request (its symbols free again), or a request task that
    /// died (counted as failed).
    fn joined(&mut self, r: Result<Sent, tokio::task::JoinError>) -> Sent {
        match r {
            Ok(sent) => {
                for &s in &sent.symbols {
                    self.busy[s] = self.busy[s].saturating_sub(1);
                }
                sent
            }
            Err(e) => {
                // A task that panicked or was cancelled leaves its symbols
                // marked: free them all (nothing else is waiting on order then).
                self.busy.iter_mut().for_each(|b| *b = 0);
                Sent {
                    symbols: Vec::new(),
                    result: Err(anyhow::anyhow!("publish task failed: {e}")),
                    took: Duration::ZERO,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of Pusher's HTTP API reference ("Worked
    /// authentication example"): app 3, key 278d425bdf160c739803, secret
    /// 7ad3773142a6692b25b8, event `foo` on `project-3`, timestamp 1353088179.
    #[test]
    fn signs_pusher_worked_example() {
        let body = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        assert_eq!(body_md5(body), "ec365a775a4cd0599faeb73354201b6f");
        let creds = Credentials {
            app_id: "3".into(),
            key: "278d425bdf160c739803".into(),
            secret: "7ad3773142a6692b25b8".into(),
        };
        assert_eq!(
            signed_query(&creds, "/apps/3/events", body, 1_353_088_179),
            "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0\
             &body_md5=ec365a775a4cd0599faeb73354201b6f\
             &auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        );
    }

    #[test]
    fn batch_body_carries_data_as_a_string() {
        let tick = r#"{"type":"tick","symbol":"AAPL","seq":1}"#;
        let body = batch_body([("AAPL", tick), ("MSFT", "a\\b\n")]);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let batch = v["batch"].as_array().unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[0]["channel"], "AAPL");
        assert_eq!(batch[0]["name"], "tick");
        assert_eq!(batch[0]["data"], tick, "data is the tick JSON, as a string");
        assert_eq!(batch[1]["data"], "a\\b\n");
    }
}
