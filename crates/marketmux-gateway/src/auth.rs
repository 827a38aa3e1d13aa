//! Authentication and admission: JWT bearer tokens for sockets and user APIs,
//! the ingest token, and the Origin allow-list for upgrades.
//!
//! Off by default; on when a secret or key is configured. A token comes from
//! `Authorization: Bearer …`, a `token` query parameter, or (for browsers, which
//! cannot set headers on a WebSocket) a `Sec-WebSocket-Protocol` entry
//! `bearer.<jwt>`, in which case the server selects the other offered
//! protocol (`marketmux.v1`) in its answer.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap, StatusCode};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use marketmux_core::auth::AuthenticatedUser;
use marketmux_core::Symbol;
use serde::Deserialize;

use crate::error::ApiError;
use crate::state::GatewayState;

/// The subprotocol a browser offers beside its `bearer.<jwt>` entry.
pub const SUBPROTOCOL: &str = "marketmux.v1";
const BEARER_PROTOCOL_PREFIX: &str = "bearer.";
/// Shortest HS256 secret accepted: the hash's own length (RFC 7518 §3.2). A
/// shorter one (an empty one included) refuses to build a verifier, so a
/// mistyped setting stops the node instead of weakening or disabling auth.
pub const MIN_HS256_SECRET_BYTES: usize = 32;
/// Seconds of clock difference allowed on `exp` and `nbf`.
const CLOCK_LEEWAY_SECS: u64 = 5;

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token where one is needed.
    #[error("missing token: send Authorization: Bearer <jwt>, ?token=<jwt> or the subprotocol bearer.<jwt>")]
    Missing,
    /// A token that does not verify (signature, algorithm, shape).
    #[error("invalid token: {0}")]
    Invalid(String),
    /// A token past its `exp`.
    #[error("token expired")]
    Expired,
    /// A token before its `nbf`.
    #[error("token not valid yet (nbf is in the future)")]
    NotYetValid,
    /// An HS256 secret too short to be safe (a configuration error).
    #[error("the HS256 secret is {0} bytes; at least {MIN_HS256_SECRET_BYTES} are needed")]
    WeakSecret(usize),
    /// A token whose `sub` is not a user id.
    #[error("token subject must be a positive integer user id")]
    Subject,
    /// A socket opened from a page whose origin is not allowed.
    #[error("origin {0:?} is not allowed")]
    Origin(String),
}

impl AuthError {
    /// 401 for token problems, 403 for a refused origin.
    pub fn into_api_error(self) -> ApiError {
        let (status, code) = match self {
            AuthError::Origin(_) => (StatusCode::FORBIDDEN, "forbidden_origin"),
            AuthError::Expired => (StatusCode::UNAUTHORIZED, "token_expired"),
            _ => (StatusCode::UNAUTHORIZED, "unauthorized"),
        };
        ApiError::new(status, code, self.to_string())
    }
}

/// Which symbols a token may subscribe to: exact names, or prefixes ending in `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolFilter {
    exact: HashSet<String>,
    prefixes: Vec<String>,
}

impl SymbolFilter {
    /// From the token's `symbols` claim, e.g. `["AAPL", "BINANCE:*"]`.
    pub fn new(patterns: &[String]) -> Self {
        let mut exact = HashSet::new();
        let mut prefixes = Vec::new();
        for p in patterns {
            match p.strip_suffix('*') {
                Some(prefix) => prefixes.push(prefix.to_string()),
                None => {
                    exact.insert(p.clone());
                }
            }
        }
        Self { exact, prefixes }
    }

    /// True if `symbol` may be subscribed to.
    pub fn allows(&self, symbol: &Symbol) -> bool {
        let s = symbol.as_str();
        self.exact.contains(s) || self.prefixes.iter().any(|p| s.starts_with(p.as_str()))
    }
}

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user (the token's `sub`).
    pub user_id: i64,
    /// The token's `exp`; the socket is closed then.
    pub expires_at: Option<SystemTime>,
    /// Restriction from the `symbols` claim, if any.
    pub symbols: Option<SymbolFilter>,
}

#[derive(Deserialize)]
struct Claims {
    sub: serde_json::Value,
    exp: Option<u64>,
    symbols: Option<Vec<String>>,
}

/// Verifies JWTs with one key and algorithm.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.validation.algorithms)
            .finish()
    }
}

impl JwtVerifier {
    fn with(key: DecodingKey, alg: Algorithm) -> Self {
        let mut validation = Validation::new(alg);
        validation.leeway = CLOCK_LEEWAY_SECS;
        validation.validate_exp = true;
        // A token issued for later is refused until then (same leeway as `exp`).
        validation.validate_nbf = true;
        // `sub` is checked by hand: a number is accepted as well as a string.
        validation.required_spec_claims = ["exp"].into_iter().map(String::from).collect();
        Self { key, validation }
    }

    /// HS256 with a shared secret of at least [`MIN_HS256_SECRET_BYTES`].
    pub fn hs256(secret: &[u8]) -> Result<Self, AuthError> {
        if secret.len() < MIN_HS256_SECRET_BYTES {
            return Err(AuthError::WeakSecret(secret.len()));
        }
        Ok(Self::with(
            DecodingKey::from_secret(secret),
            Algorithm::HS256,
        ))
    }

    /// The algorithm tokens must be signed with (for the start-up log).
    pub fn algorithm(&self) -> Algorithm {
        self.validation
            .algorithms
            .first()
            .copied()
            .unwrap_or(Algorithm::HS256)
    }

    /// RS256 or ES256 with a PEM public key (the kind of key decides).
    pub fn from_public_key_pem(pem: &[u8]) -> Result<Self, AuthError> {
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            return Ok(Self::with(key, Algorithm::RS256));
        }
        DecodingKey::from_ec_pem(pem)
            .map(|key| Self::with(key, Algorithm::ES256))
            .map_err(|e| AuthError::Invalid(format!("public key is neither RSA nor EC PEM: {e}")))
    }

    /// Checks signature and expiry and reads the identity.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                _ => AuthError::Invalid(e.to_string()),
            },
        )?;
        let c = data.claims;
        let user_id = match &c.sub {
            serde_json::Value::String(s) => s.parse::<i64>().ok(),
            serde_json::Value::Number(n) => n.as_i64(),
            _ => None,
        }
        .filter(|id| *id > 0)
        .ok_or(AuthError::Subject)?;
        Ok(Identity {
            user_id,
            expires_at: c.exp.map(|s| UNIX_EPOCH + Duration::from_secs(s)),
            symbols: c.symbols.as_deref().map(SymbolFilter::new),
        })
    }
}

/// Authentication settings of a node.
#[derive(Debug, Default)]
pub struct AuthConfig {
    /// When set, sockets and user APIs need a valid token.
    pub jwt: Option<JwtVerifier>,
    /// When set, `POST /api/v1/ticks` needs `Authorization: Bearer <token>`.
    pub ingest_token: Option<String>,
    /// WebSocket upgrades whose `Origin` is not in the list are refused (403);
    /// unset, only same-origin pages (Origin host = `Host`) may connect.
    /// Requests without `Origin` (non-browser clients) are allowed.
    pub allowed_origins: Option<Vec<String>>,
}

/// A token found in a request, and the subprotocol to answer with.
pub struct Presented {
    /// The token as sent.
    pub token: String,
    /// The `Sec-WebSocket-Protocol` to answer with, when the token came in one.
    pub subprotocol: Option<&'static str>,
}

/// Finds a token in the header, the query string, or the subprotocol list.
pub fn find_token(headers: &HeaderMap, query: Option<&str>) -> Option<Presented> {
    if let Some(t) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(Presented {
            token: t.trim().to_string(),
            subprotocol: None,
        });
    }
    if let Some(q) = query {
        for pair in q.split('&') {
            if let Some(t) = pair.strip_prefix("token=") {
                return Some(Presented {
                    token: t.to_string(),
                    subprotocol: None,
                });
            }
        }
    }
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    offered
        .iter()
        .find_map(|p| p.strip_prefix(BEARER_PROTOCOL_PREFIX))
        .map(|t| Presented {
            token: t.to_string(),
            subprotocol: offered.contains(&SUBPROTOCOL).then_some(SUBPROTOCOL),
        })
}

impl AuthConfig {
    /// Checks the Origin of an upgrade (cross-site WebSocket hijacking). A
    /// request without one is not from a browser and passes. With an
    /// allow-list, the Origin must be on it (`*`: any); without one, only the
    /// node's own pages may connect: the Origin's host must be the request's
    /// `Host`.
    pub fn check_origin(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let origin = origin.to_str().unwrap_or("");
        let allowed = match &self.allowed_origins {
            Some(list) => list
                .iter()
                .any(|a| a == "*" || a.eq_ignore_ascii_case(origin)),
            None => is_same_origin(origin, headers.get(header::HOST)),
        };
        if allowed {
            Ok(())
        } else {
            Err(AuthError::Origin(origin.chars().take(100).collect()))
        }
    }

    /// The identity of a request, `Ok(None)` when authentication is off.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Option<(Identity, Option<&'static str>)>, AuthError> {
        let Some(jwt) = &self.jwt else {
            return Ok(None);
        };
        let presented = find_token(headers, query).ok_or(AuthError::Missing)?;
        Ok(Some((jwt.verify(&presented.token)?, presented.subprotocol)))
    }

    /// Checks the ingest token of `POST /api/v1/ticks`, if one is configured.
    pub fn check_ingest(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        require_bearer(
            headers,
            self.ingest_token.as_deref(),
            "ingest needs the ingest token",
        )
    }
}

/// Checks `Authorization: Bearer <want>` in constant time; passes when `want`
/// is `None` (that check is off). `refusal` is the 401 message.
pub fn require_bearer(
    headers: &HeaderMap,
    want: Option<&str>,
    refusal: &str,
) -> Result<(), ApiError> {
    let Some(want) = want else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), want.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            refusal,
        ))
    }
}

/// Compares in time independent of where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Middleware for user APIs (alerts): with authentication on, a valid token is
/// required and its user is attached as [`AuthenticatedUser`]; off, requests pass.
pub async fn require_user(
    State(state): State<Arc<GatewayState>>,
    mut req: Request,
    next: Next,
) -> Response {
    match state
        .config
        .auth
        .authenticate(req.headers(), req.uri().query())
    {
        Ok(Some((identity, _))) => {
            req.extensions_mut()
                .insert(AuthenticatedUser(identity.user_id));
            next.run(req).await
        }
        Ok(None) => next.run(req).await,
        Err(e) => e.into_api_error().into_response(),
    }
}

/// Wraps user routes (alerts) with [`require_user`].
pub fn protect_user_routes(state: &Arc<GatewayState>, routes: axum::Router) -> axum::Router {
    routes.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        require_user,
    ))
}

/// Whether `origin` (`scheme://host[:port]`) names the host the request was sent to.
fn is_same_origin(origin: &str, host: Option<&header::HeaderValue>) -> bool {
    let Some(host) = host.and_then(|h| h.to_str().ok()) else {
        return false;
    };
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|authority| authority.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    use super::*;

    const SECRET: &[u8] = b"unit-test-secret-of-thirty-two-bytes";

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn token(claims: serde_json::Value, secret: &[u8]) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    #[test]
    fn verifies_signature_expiry_and_subject() {
        let v = JwtVerifier::hs256(SECRET).unwrap();
        let id = v
            .verify(&token(
                json!({"sub":"7","exp":now()+60,"symbols":["AAPL","BINANCE:*"]}),
                SECRET,
            ))
            .unwrap();
        assert_eq!(id.user_id, 7);
        let f = id.symbols.unwrap();
        assert!(
            f.allows(&"AAPL".parse().unwrap()) && f.allows(&"BINANCE:BTCUSDT".parse().unwrap())
        );
        assert!(!f.allows(&"MSFT".parse().unwrap()));
        assert_eq!(
            v.verify(&token(json!({"sub":7,"exp":now()+60}), b"other"))
                .unwrap_err()
                .to_string()
                .split(':')
                .next(),
            Some("invalid token")
        );
        assert_eq!(
            v.verify(&token(json!({"sub":"7","exp":now()-60}), SECRET))
                .unwrap_err(),
            AuthError::Expired
        );
        assert_eq!(
            v.verify(&token(json!({"sub":"alice","exp":now()+60}), SECRET))
                .unwrap_err(),
            AuthError::Subject
        );
        assert!(
            v.verify(&token(json!({"sub":"7"}), SECRET)).is_err(),
            "exp is required"
        );
        assert!(v.verify("not.a.jwt").is_err());
    }

    #[test]
    fn refuses_tokens_not_valid_yet_beyond_the_leeway() {
        let v = JwtVerifier::hs256(SECRET).unwrap();
        let later = json!({"sub":"7","exp":now()+600,"nbf":now()+60});
        assert_eq!(
            v.verify(&token(later, SECRET)).unwrap_err(),
            AuthError::NotYetValid
        );
        let within_leeway = json!({"sub":"7","exp":now()+600,"nbf":now()+2});
        assert_eq!(v.verify(&token(within_leeway, SECRET)).unwrap().user_id, 7);
        let past = json!({"sub":"7","exp":now()+600,"nbf":now()-60});
        assert!(v.verify(&token(past, SECRET)).is_ok());
    }

    #[test]
    fn refuses_empty_and_short_hs256_secrets() {
        for weak in [&b""[..], b"secret", &[b'k'; MIN_HS256_SECRET_BYTES - 1]] {
            assert_eq!(
                JwtVerifier::hs256(weak).unwrap_err(),
                AuthError::WeakSecret(weak.len())
            );
        }
        let v = JwtVerifier::hs256(&[b'k'; MIN_HS256_SECRET_BYTES]).unwrap();
        assert_eq!(v.algorithm(), Algorithm::HS256);
    }

    #[test]
    fn finds_tokens_in_header_query_and_subprotocol() {
        let mut h = HeaderMap::new();
        assert!(find_token(&h, Some("a=1&token=abc")).is_some_and(|p| p.token == "abc"));
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            "marketmux.v1, bearer.x.y.z".parse().unwrap(),
        );
        let p = find_token(&h, None).unwrap();
        assert_eq!(
            (p.token.as_str(), p.subprotocol),
            ("x.y.z", Some(SUBPROTOCOL))
        );
        h.insert(header::AUTHORIZATION, "Bearer hdr".parse().unwrap());
        assert_eq!(find_token(&h, None).unwrap().token, "hdr");
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secrets"));
    }

    #[test]
    fn origin_allow_list() {
        let cfg = AuthConfig {
            allowed_origins: Some(vec!["https://app.example".into()]),
            ..AuthConfig::default()
        };
        let mut h = HeaderMap::new();
        assert!(cfg.check_origin(&h).is_ok(), "no Origin: not a browser");
        h.insert(header::ORIGIN, "https://app.example".parse().unwrap());
        assert!(cfg.check_origin(&h).is_ok());
        h.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert!(matches!(cfg.check_origin(&h), Err(AuthError::Origin(_))));
    }

    #[test]
    fn without_an_allow_list_only_the_nodes_own_pages_connect() {
        let cfg = AuthConfig::default();
        let mut h = HeaderMap::new();
        assert!(cfg.check_origin(&h).is_ok(), "no Origin: not a browser");
        h.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        for same in ["http://127.0.0.1:8080", "https://127.0.0.1:8080"] {
            h.insert(header::ORIGIN, same.parse().unwrap());
            assert!(cfg.check_origin(&h).is_ok(), "{same}");
        }
        for other in ["https://evil.example", "http://127.0.0.1:9999", "null"] {
            h.insert(header::ORIGIN, other.parse().unwrap());
            assert!(
                matches!(cfg.check_origin(&h), Err(AuthError::Origin(_))),
                "{other}"
            );
        }
        h.remove(header::HOST);
        h.insert(header::ORIGIN, "http://127.0.0.1:8080".parse().unwrap());
        assert!(cfg.check_origin(&h).is_err(), "no Host to compare with");
    }
}
