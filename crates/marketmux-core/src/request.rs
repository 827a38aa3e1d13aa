//! What a WebSocket client sends: JSON text frames such as
//! `{"action":"subscribe","symbols":["AAPL","MSFT"],"id":7}`.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::response::ErrorCode;
use crate::symbol::{Symbol, SymbolError};

/// Most symbols named in one subscribe or unsubscribe request.
pub const MAX_SYMBOLS_PER_REQUEST: usize = 256;

/// A parsed client request. `id` is the client's optional correlation value,
/// echoed verbatim (as raw JSON) in the reply.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientRequest {
    Subscribe {
        symbols: Vec<Symbol>,
        id: Option<String>,
    },
    Unsubscribe {
        symbols: Vec<Symbol>,
        id: Option<String>,
    },
    Ping {
        id: Option<String>,
    },
    Identify {
        user_id: i64,
        id: Option<String>,
    },
}

/// A request that could not be parsed; carries the `id` when it was readable
/// so the error reply can still be correlated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    pub code: ErrorCode,
    pub message: String,
    pub id: Option<String>,
}

#[derive(Deserialize)]
struct RawRequest<'a> {
    #[serde(borrow)]
    action: Option<std::borrow::Cow<'a, str>>,
    symbol: Option<serde_json::Value>,
    symbols: Option<serde_json::Value>,
    user_id: Option<serde_json::Value>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
}

impl ClientRequest {
    /// Parses one text frame.
    pub fn parse(text: &str) -> Result<Self, RequestError> {
        let raw: RawRequest<'_> = serde_json::from_str(text).map_err(|e| RequestError {
            code: ErrorCode::InvalidJson,
            message: format!("request is not a JSON object: {e}"),
            id: None,
        })?;
        let id = match raw.id.map(echoable_id).transpose() {
            Ok(id) => id,
            Err(message) => {
                return Err(RequestError {
                    code: ErrorCode::InvalidRequest,
                    message,
                    id: None,
                })
            }
        };
        let err = |code, message: String| RequestError {
            code,
            message,
            id: id.clone(),
        };
        let action = raw
            .action
            .ok_or_else(|| err(ErrorCode::InvalidRequest, "missing field `action`".into()))?;
        match action.as_ref() {
            "subscribe" | "unsubscribe" => {
                let symbols = symbols_of(raw.symbol, raw.symbols).map_err(|(c, m)| err(c, m))?;
                Ok(if action == "subscribe" {
                    ClientRequest::Subscribe { symbols, id }
                } else {
                    ClientRequest::Unsubscribe { symbols, id }
                })
            }
            "ping" => Ok(ClientRequest::Ping { id }),
            "identify" => match raw.user_id.as_ref().and_then(|v| v.as_i64()) {
                Some(user_id) if user_id > 0 => Ok(ClientRequest::Identify { user_id, id }),
                _ => Err(err(
                    ErrorCode::InvalidRequest,
                    "identify needs a positive integer `user_id`".into(),
                )),
            },
            other => Err(err(
                ErrorCode::UnknownAction,
                format!(
                    "unknown action {:?}; expected subscribe, unsubscribe, ping or identify",
                    truncate(other, 40)
                ),
            )),
        }
    }
}

fn symbols_of(
    one: Option<serde_json::Value>,
    many: Option<serde_json::Value>,
) -> Result<Vec<Symbol>, (ErrorCode, String)> {
    let mut names: Vec<serde_json::Value> = Vec::new();
    if let Some(v) = one {
        names.push(v);
    }
    match many {
        Some(serde_json::Value::Array(a)) => names.extend(a),
        Some(_) => {
            return Err((
                ErrorCode::InvalidRequest,
                "`symbols` must be an array of strings".into(),
            ))
        }
        None => {}
    }
    if names.is_empty() {
        return Err((
            ErrorCode::InvalidRequest,
            "give `symbol` or a non-empty `symbols`".into(),
        ));
    }
    if names.len() > MAX_SYMBOLS_PER_REQUEST {
        return Err((
            ErrorCode::InvalidRequest,
            format!("at most {MAX_SYMBOLS_PER_REQUEST} symbols per request"),
        ));
    }
    let mut out = Vec::with_capacity(names.len());
    for v in names {
        let s = v.as_str().ok_or_else(|| {
            (
                ErrorCode::InvalidSymbol,
                format!("symbol must be a string, got {v}"),
            )
        })?;
        let sym = Symbol::new(s).map_err(|e: SymbolError| {
            (
                ErrorCode::InvalidSymbol,
                format!("invalid symbol {:?}: {e}", truncate(s, 40)),
            )
        })?;
        if !out.contains(&sym) {
            out.push(sym);
        }
    }
    Ok(out)
}

/// The `id` as it will be echoed, if every strict JSON parser reads it back:
/// the grammar allows numbers such as `1e999` that overflow an f64, which
/// serde_json (and so many clients) refuse, so those are rejected here.
fn echoable_id(raw: &RawValue) -> Result<String, String> {
    match serde_json::from_str::<serde_json::Value>(raw.get()) {
        Ok(_) => Ok(raw.get().to_owned()),
        Err(e) => Err(format!("`id` cannot be echoed back: {e}")),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(s: &str) -> Symbol {
        Symbol::new(s).unwrap()
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(
            ClientRequest::parse(r#"{"action":"subscribe","symbol":"AAPL"}"#).unwrap(),
            ClientRequest::Subscribe {
                symbols: vec![sym("AAPL")],
                id: None
            }
        );
        assert_eq!(
            ClientRequest::parse(
                r#"{"action":"subscribe","symbols":["AAPL","MSFT","AAPL"],"id":"x1"}"#
            )
            .unwrap(),
            ClientRequest::Subscribe {
                symbols: vec![sym("AAPL"), sym("MSFT")],
                id: Some("\"x1\"".into())
            }
        );
        assert_eq!(
            ClientRequest::parse(r#"{"action":"unsubscribe","symbol":"AAPL","id":{"n":1}}"#)
                .unwrap(),
            ClientRequest::Unsubscribe {
                symbols: vec![sym("AAPL")],
                id: Some(r#"{"n":1}"#.into())
            }
        );
        assert_eq!(
            ClientRequest::parse(r#"{"action":"ping"}"#).unwrap(),
            ClientRequest::Ping { id: None }
        );
        assert_eq!(
            ClientRequest::parse(r#"{"action":"identify","user_id":7}"#).unwrap(),
            ClientRequest::Identify {
                user_id: 7,
                id: None
            }
        );
    }

    #[test]
    fn errors_carry_codes_and_ids() {
        let cases = [
            ("{", ErrorCode::InvalidJson),
            ("[1,2]", ErrorCode::InvalidJson),
            (r#"{"symbol":"AAPL"}"#, ErrorCode::InvalidRequest),
            (r#"{"action":"explode","id":3}"#, ErrorCode::UnknownAction),
            (r#"{"action":"subscribe"}"#, ErrorCode::InvalidRequest),
            (
                r#"{"action":"subscribe","symbols":"AAPL"}"#,
                ErrorCode::InvalidRequest,
            ),
            (
                r#"{"action":"subscribe","symbol":"BAD SYMBOL"}"#,
                ErrorCode::InvalidSymbol,
            ),
            (
                r#"{"action":"subscribe","symbol":42}"#,
                ErrorCode::InvalidSymbol,
            ),
            (
                r#"{"action":"identify","user_id":"x"}"#,
                ErrorCode::InvalidRequest,
            ),
        ];
        for (text, code) in cases {
            assert_eq!(ClientRequest::parse(text).unwrap_err().code, code, "{text}");
        }
        // Found by fuzz/fuzz_targets/client_request.rs: an id that overflows an
        // f64 would make the reply unreadable to strict parsers.
        for text in [
            r#"{"action":"ping","id":717e777777779771}"#,
            r#"{"action":"ping","id":{"n":-1e400}}"#,
        ] {
            let e = ClientRequest::parse(text).unwrap_err();
            assert_eq!((e.code, e.id), (ErrorCode::InvalidRequest, None), "{text}");
        }
        assert_eq!(
            ClientRequest::parse(r#"{"action":"ping","id":1e300}"#).unwrap(),
            ClientRequest::Ping {
                id: Some("1e300".into())
            }
        );
        assert_eq!(
            ClientRequest::parse(r#"{"action":"explode","id":3}"#)
                .unwrap_err()
                .id
                .as_deref(),
            Some("3")
        );
    }
}
