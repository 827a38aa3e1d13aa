//! What a WebSocket client sends: JSON text frames such as
//! `{"action":"subscribe","symbols":["AAPL","MSFT"],"id":7}`.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::candle::Interval;
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
    ///
    /// `candles` (`{"candles":["1m"]}`): the symbols' candles of those
    /// intervals instead of their ticks (empty: ticks); a `max_rate` then
    /// caps the updates of each symbol and interval.
    Subscribe {
        /// The symbols, in the order given, without repeats.
        symbols: Vec<Symbol>,
        /// Positions to resume from, per symbol.
        since: Vec<(Symbol, Position)>,
        /// Candle intervals to follow instead of the ticks (empty: ticks).
        candles: Vec<Interval>,
        /// What the client asks of the subscription (`max_rate`).
        options: SubscribeOptions,
        /// The request's `id`, echoed in the reply.
        id: Option<String>,
    },
    /// `unsubscribe`: one symbol or several; with `candles`, leave those
    /// intervals' candles instead of the ticks.
    Unsubscribe {
        /// The symbols to leave.
        symbols: Vec<Symbol>,
        /// Candle intervals to leave (empty: the ticks).
        candles: Vec<Interval>,
        /// The request's `id`, echoed in the reply.
        id: Option<String>,
    },
    /// `ping`: answered with `pong` (browsers cannot send WebSocket pings).
    Ping {
        /// The request's `id`, echoed in the reply.
        id: Option<String>,
    },
    /// `identify`: which user's alerts this socket hears (only while authentication is off).
    Identify {
        /// The user.
        user_id: i64,
        /// The request's `id`, echoed in the reply.
        id: Option<String>,
    },
}

/// A request that could not be parsed; carries the `id` when it was readable
/// so the error reply can still be correlated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    /// The error code the reply carries.
    pub code: ErrorCode,
    /// What was wrong, for people.
    pub message: String,
    /// The request's `id`, when it could be read, echoed in the reply.
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
    candles: Option<serde_json::Value>,
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
                let candles = match raw.candles {
                    Some(v) => intervals_of(v).map_err(|m| err(ErrorCode::InvalidRequest, m))?,
                    None => Vec::new(),
                };
                Ok(if action == "subscribe" {
                    let since =
                        match raw.since {
                            Some(_) if !candles.is_empty() => return Err(err(
                                ErrorCode::InvalidRequest,
                                "`since` resumes ticks; a candle subscribe gets the current candle"
                                    .into(),
                            )),
                            Some(v) => positions_of(v, &symbols)
                                .map_err(|m| err(ErrorCode::InvalidRequest, m))?,
                            None => Vec::new(),
                        };
                    let options = SubscribeOptions::parse(raw.max_rate.as_ref())
                        .map_err(|m| err(ErrorCode::InvalidRequest, m))?;
                    ClientRequest::Subscribe {
                        symbols,
                        since,
                        candles,
                        options,
                        id,
                    }
                } else {
                    ClientRequest::Unsubscribe {
                        symbols,
                        candles,
                        id,
                    }
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

/// The intervals of `candles`: a non-empty array of interval names
/// (`["1m","1h"]`), each once.
fn intervals_of(v: serde_json::Value) -> Result<Vec<Interval>, String> {
    let serde_json::Value::Array(names) = v else {
        return Err(r#"`candles` must be an array of intervals such as ["1m"]"#.into());
    };
    if names.is_empty() {
        return Err("`candles` must name at least one interval: 1s, 1m, 5m, 1h, 1d".into());
    }
    let mut out = Vec::with_capacity(Interval::ALL.len());
    for name in names {
        let interval = name
            .as_str()
            .ok_or_else(|| format!("`candles` holds {name}, not an interval name"))?
            .parse::<Interval>()
            .map_err(|e| e.to_string())?;
        if !out.contains(&interval) {
            out.push(interval);
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
    fn a_rate_cap_applies_to_candles_too() {
        let req = ClientRequest::parse(
            r#"{"action":"subscribe","candles":["1s"],"symbols":["AAPL"],"max_rate":2}"#,
        )
        .unwrap();
        let ClientRequest::Subscribe {
            candles, options, ..
        } = req
        else {
            panic!("not a subscribe: {req:?}")
        };
        assert_eq!(candles, [Interval::S1]);
        assert_eq!(options.max_rate.map(|r| r.per_sec()), Some(2.0));
        let e = ClientRequest::parse(
            r#"{"action":"subscribe","candles":["1m"],"symbols":["AAPL"],"max_rate":5000,"id":3}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(e.message.contains("max_rate"), "{}", e.message);
        assert_eq!(e.id.as_deref(), Some("3"));
    }

    #[test]
    fn parses_candle_subscriptions() {
        assert_eq!(
            ClientRequest::parse(
                r#"{"action":"subscribe","candles":["1m","1h","1m"],"symbols":["AAPL"]}"#
            )
            .unwrap(),
            ClientRequest::Subscribe {
                symbols: vec![sym("AAPL")],
                since: vec![],
                candles: vec![Interval::M1, Interval::H1],
                options: SubscribeOptions::default(),
                id: None
            }
        );
        assert_eq!(
            ClientRequest::parse(r#"{"action":"unsubscribe","candles":["1d"],"symbol":"AAPL"}"#)
                .unwrap(),
            ClientRequest::Unsubscribe {
                symbols: vec![sym("AAPL")],
                candles: vec![Interval::D1],
                id: None
            }
        );
        for bad in [
            r#"{"action":"subscribe","candles":["2m"],"symbols":["AAPL"]}"#,
            r#"{"action":"subscribe","candles":[],"symbols":["AAPL"]}"#,
            r#"{"action":"subscribe","candles":"1m","symbols":["AAPL"]}"#,
            r#"{"action":"subscribe","candles":[1],"symbols":["AAPL"]}"#,
            r#"{"action":"subscribe","candles":["1m"],"symbols":["AAPL"],"since":{}}"#,
        ] {
            let e = ClientRequest::parse(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidRequest, "{bad}");
        }
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(
            ClientRequest::parse(r#"{"action":"subscribe","symbol":"AAPL"}"#).unwrap(),
            ClientRequest::Subscribe {
                symbols: vec![sym("AAPL")],
                since: vec![],
                candles: vec![],
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
                candles: vec![],
                options: SubscribeOptions::default(),
                id: Some("\"x1\"".into())
            }
        );
        assert_eq!(
            ClientRequest::parse(r#"{"action":"unsubscribe","symbol":"AAPL","id":{"n":1}}"#)
                .unwrap(),
            ClientRequest::Unsubscribe {
                symbols: vec![sym("AAPL")],
                candles: vec![],
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
