//! What a WebSocket client sends: JSON text frames such as
//! `{"action":"subscribe","symbols":["AAPL","MSFT"],"id":7}`.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::options::SubscribeOptions;
use crate::response::ErrorCode;
use crate::stream::{Epoch, Position};
use crate::symbol::{Symbol, SymbolError};

/// Most symbols named in one subscribe or unsubscribe request, and most
/// positions in one subscribe's `since`.
pub const MAX_SYMBOLS_PER_REQUEST: usize = 256;

/// A parsed client request. `id` is the client's optional correlation value,
/// echoed verbatim (as raw JSON) in the reply.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientRequest {
    /// `since` holds the positions the client asks to resume from, each for
    /// a symbol of `symbols` (`{"since":{"AAPL":{"seq":120,"epoch":"k3f9"}}}`);
    /// `options`, what the client asks of the subscription (`max_rate`).
    Subscribe {
        symbols: Vec<Symbol>,
        since: Vec<(Symbol, Position)>,
        options: SubscribeOptions,
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
    since: Option<serde_json::Value>,
    max_rate: Option<serde_json::Value>,
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
                    let since = match raw.since {
                        Some(v) => positions_of(v, &symbols)
                            .map_err(|m| err(ErrorCode::InvalidRequest, m))?,
                        None => Vec::new(),
                    };
                    let options = SubscribeOptions::parse(raw.max_rate.as_ref())
                        .map_err(|m| err(ErrorCode::InvalidRequest, m))?;
                    ClientRequest::Subscribe {
                        symbols,
                        since,
                        options,
                        id,
                    }
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

/// The positions of a subscribe's `since`: an object mapping each symbol (one
/// of `symbols`) to `{"seq": N, "epoch": "E"}`, `seq` a non-negative integer.
fn positions_of(
    since: serde_json::Value,
    symbols: &[Symbol],
) -> Result<Vec<(Symbol, Position)>, String> {
    let serde_json::Value::Object(map) = since else {
        return Err(
            r#"`since` must be an object such as {"AAPL":{"seq":120,"epoch":"k3f9"}}"#.into(),
        );
    };
    if map.len() > MAX_SYMBOLS_PER_REQUEST {
        return Err(format!(
            "at most {MAX_SYMBOLS_PER_REQUEST} positions in `since`"
        ));
    }
    let mut out = Vec::with_capacity(map.len());
    for (name, pos) in map {
        let shown = truncate(&name, 40);
        let symbol = Symbol::new(&name)
            .map_err(|e| format!("`since` names an invalid symbol {shown:?}: {e}"))?;
        if !symbols.contains(&symbol) {
            return Err(format!(
                "`since` names {symbol}, which this request does not subscribe to"
            ));
        }
        let bad = |what: &str| format!("`since` of {symbol}: {what}");
        let serde_json::Value::Object(pos) = pos else {
            return Err(bad(r#"expected {"seq": N, "epoch": "E"}"#));
        };
        let seq = pos
            .get("seq")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| bad("`seq` must be an integer >= 0"))?;
        let epoch: Epoch = pos
            .get("epoch")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| bad("`epoch` must be a string"))?
            .parse()
            .map_err(|e| bad(&format!("invalid `epoch`: {e}")))?;
        out.push((symbol, Position { epoch, seq }));
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
                since: vec![],
                options: SubscribeOptions::default(),
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
                since: vec![],
                options: SubscribeOptions::default(),
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
    fn parses_positions_to_resume_from() {
        let req = ClientRequest::parse(
            r#"{"action":"subscribe","symbols":["AAPL","MSFT"],"since":{"AAPL":{"seq":120,"epoch":"k3f9"},"MSFT":{"epoch":"1","seq":0}}}"#,
        )
        .unwrap();
        let ClientRequest::Subscribe { since, .. } = req else {
            panic!("{req:?}")
        };
        let epoch = |s: &str| s.parse::<Epoch>().unwrap();
        assert_eq!(
            since,
            [
                (
                    sym("AAPL"),
                    Position {
                        epoch: epoch("k3f9"),
                        seq: 120
                    }
                ),
                (
                    sym("MSFT"),
                    Position {
                        epoch: epoch("1"),
                        seq: 0
                    }
                ),
            ]
        );
    }

    #[test]
    fn a_bad_since_is_an_invalid_request_with_its_id() {
        let too_many = {
            let names: Vec<String> = (0..=MAX_SYMBOLS_PER_REQUEST)
                .map(|i| format!("\"S{i}\""))
                .collect();
            let since: Vec<String> = (0..=MAX_SYMBOLS_PER_REQUEST)
                .map(|i| format!(r#""S{i}":{{"seq":1,"epoch":"a"}}"#))
                .collect();
            format!(
                r#"{{"action":"subscribe","symbols":[{}],"since":{{{}}},"id":9}}"#,
                names.join(","),
                since.join(",")
            )
        };
        let cases = [
            r#""AAPL""#,
            r#"[{"seq":1,"epoch":"a"}]"#,
            r#"{"AAPL":{"seq":-1,"epoch":"a"}}"#,
            r#"{"AAPL":{"seq":1.5,"epoch":"a"}}"#,
            r#"{"AAPL":{"seq":"1","epoch":"a"}}"#,
            r#"{"AAPL":{"epoch":"a"}}"#,
            r#"{"AAPL":{"seq":1}}"#,
            r#"{"AAPL":{"seq":1,"epoch":"A-B"}}"#,
            r#"{"AAPL":{"seq":1,"epoch":""}}"#,
            r#"{"AAPL":[1,"a"]}"#,
            r#"{"MSFT":{"seq":1,"epoch":"a"}}"#,
            r#"{"BAD SYMBOL":{"seq":1,"epoch":"a"}}"#,
        ];
        for since in cases {
            let text =
                format!(r#"{{"action":"subscribe","symbol":"AAPL","since":{since},"id":9}}"#);
            let e = ClientRequest::parse(&text).unwrap_err();
            assert_eq!(
                (e.code, e.id.as_deref()),
                (ErrorCode::InvalidRequest, Some("9")),
                "{text}"
            );
            assert!(e.message.contains("since"), "{text}: {}", e.message);
        }
        let e = ClientRequest::parse(&too_many).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn a_max_rate_applies_to_the_whole_subscribe() {
        let req = ClientRequest::parse(r#"{"action":"subscribe","symbols":["AAPL"],"max_rate":4}"#)
            .unwrap();
        let ClientRequest::Subscribe { options, .. } = req else {
            panic!("{req:?}")
        };
        assert_eq!(options.max_rate.map(|r| r.per_sec()), Some(4.0));
        for bad in ["-1", "\"NaN\"", "10000", "0.01"] {
            let text =
                format!(r#"{{"action":"subscribe","symbol":"AAPL","max_rate":{bad},"id":5}}"#);
            let e = ClientRequest::parse(&text).unwrap_err();
            assert_eq!(
                (e.code, e.id.as_deref()),
                (ErrorCode::InvalidRequest, Some("5")),
                "{text}"
            );
            assert!(e.message.contains("max_rate"), "{text}: {}", e.message);
        }
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
