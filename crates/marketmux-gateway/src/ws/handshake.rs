//! The HTTP/1.1 upgrade to WebSocket (RFC 6455 §4.2); HTTP/1.0 has none.

use base64::Engine as _;
use http::{header, HeaderMap, HeaderValue, Method, Version};

const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Why an upgrade request was refused (answered with 400 or 426).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// Not a GET.
    #[error("WebSocket upgrades use GET")]
    Method,
    /// HTTP/1.0 (or older).
    #[error("WebSocket upgrades need HTTP/1.1")]
    HttpVersion,
    /// The upgrade headers are missing.
    #[error("missing `Upgrade: websocket` or `Connection: upgrade`")]
    NotUpgrade,
    /// A protocol version other than 13.
    #[error("unsupported Sec-WebSocket-Version (this server speaks 13)")]
    Version,
    /// No usable key.
    #[error("missing or malformed Sec-WebSocket-Key")]
    Key,
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Checks an upgrade request and returns the `Sec-WebSocket-Accept` value.
pub fn accept_key(
    method: &Method,
    version: Version,
    headers: &HeaderMap,
) -> Result<HeaderValue, HandshakeError> {
    if method != Method::GET {
        return Err(HandshakeError::Method);
    }
    // HTTP/1.0 has no upgrade: hyper would send the 101 and then close.
    if version != Version::HTTP_11 {
        return Err(HandshakeError::HttpVersion);
    }
    if !has_token(headers, header::UPGRADE, "websocket")
        || !has_token(headers, header::CONNECTION, "upgrade")
    {
        return Err(HandshakeError::NotUpgrade);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return Err(HandshakeError::Version);
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or(HandshakeError::Key)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(key.as_bytes())
        .map_err(|_| HandshakeError::Key)?;
    if decoded.len() != 16 {
        return Err(HandshakeError::Key);
    }
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(ACCEPT_GUID.as_bytes());
    let accept = base64::engine::general_purpose::STANDARD.encode(sha.digest().bytes());
    HeaderValue::from_str(&accept).map_err(|_| HandshakeError::Key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6455_example_key() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        let v11 = Version::HTTP_11;
        assert_eq!(
            accept_key(&Method::GET, v11, &h).unwrap(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(
            accept_key(&Method::POST, v11, &h).unwrap_err(),
            HandshakeError::Method
        );
        assert_eq!(
            accept_key(&Method::GET, Version::HTTP_10, &h).unwrap_err(),
            HandshakeError::HttpVersion
        );
        h.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert_eq!(
            accept_key(&Method::GET, v11, &h).unwrap_err(),
            HandshakeError::Version
        );
    }
}
