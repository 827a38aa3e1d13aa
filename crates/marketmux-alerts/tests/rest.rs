//! The REST routes in process (tower `oneshot`), over the embedded store.

mod common;

use std::sync::Arc;

use axum::body::Body;
use common::*;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use marketmux_alerts::{rest, AlertStore, LocalAlertService};
use serde_json::Value;
use tower::ServiceExt as _;

async fn call(app: &axum::Router, method: Method, uri: &str, body: &str) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
    };
    (status, v)
}

fn app_over(store: Arc<dyn AlertStore>) -> axum::Router {
    rest::routes(LocalAlertService::new(store, None))
}

#[tokio::test]
async fn create_list_delete_over_rest() {
    let dir = TempDir::new();
    let app = app_over(Arc::new(sqlite_store(&dir).await));

    let (s, a) = call(
        &app,
        Method::POST,
        "/alerts",
        r#"{"user_id":1,"symbol":"AAPL","target_price":150.0,"condition":"ABOVE"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    assert_eq!(a["user_id"], 1);
    assert_eq!(a["symbol"], "AAPL");
    assert_eq!(a["condition"], "ABOVE");
    assert_eq!(a["target_price"], 150.0);
    assert_eq!(a["active"], true);
    assert!(a["created_at"].is_string());
    assert!(a["triggered_at"].is_null());
    let id = a["id"].as_i64().unwrap();

    let (s, b) = call(
        &app,
        Method::POST,
        "/alerts",
        r#"{"user_id":1,"symbol":"MSFT","target_price":10,"condition":"below"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["condition"], "BELOW");

    let (s, l) = call(&app, Method::GET, "/alerts?user_id=1", "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(l["alerts"].as_array().unwrap().len(), 2);
    let (_, l) = call(&app, Method::GET, "/alerts?user_id=1&active_only=true", "").await;
    assert_eq!(l["alerts"].as_array().unwrap().len(), 2);
    let (_, l) = call(&app, Method::GET, "/alerts?user_id=2&active_only=false", "").await;
    assert_eq!(l["alerts"].as_array().unwrap().len(), 0);

    let (s, _) = call(&app, Method::DELETE, &format!("/alerts/{id}"), "").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, e) = call(&app, Method::DELETE, &format!("/alerts/{id}"), "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(e["error"]["code"], "not_found");
    let (_, l) = call(&app, Method::GET, "/alerts?user_id=1", "").await;
    assert_eq!(l["alerts"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn each_bad_input_is_a_400_json_error() {
    let dir = TempDir::new();
    let app = app_over(Arc::new(sqlite_store(&dir).await));
    let cases = [
        (
            r#"{"user_id":1,"symbol":"AAPL","target_price":1,"condition":"SIDEWAYS"}"#,
            "invalid_condition",
        ),
        (
            r#"{"user_id":1,"symbol":"AA PL","target_price":1,"condition":"ABOVE"}"#,
            "invalid_symbol",
        ),
        (
            r#"{"user_id":1,"symbol":"","target_price":1,"condition":"ABOVE"}"#,
            "invalid_symbol",
        ),
        (
            r#"{"user_id":1,"symbol":"AAPL","target_price":0,"condition":"ABOVE"}"#,
            "invalid_target_price",
        ),
        (
            r#"{"user_id":1,"symbol":"AAPL","target_price":-5,"condition":"ABOVE"}"#,
            "invalid_target_price",
        ),
        // JSON has no NaN or infinity: an overflowing literal is refused as bad JSON.
        (
            r#"{"user_id":1,"symbol":"AAPL","target_price":1e999,"condition":"ABOVE"}"#,
            "invalid_json",
        ),
        (
            r#"{"user_id":1,"symbol":"AAPL","target_price":"NaN","condition":"ABOVE"}"#,
            "invalid_json",
        ),
        (
            r#"{"user_id":0,"symbol":"AAPL","target_price":1,"condition":"ABOVE"}"#,
            "invalid_user_id",
        ),
        (
            r#"{"user_id":1,"symbol":"AAPL","condition":"ABOVE"}"#,
            "invalid_json",
        ),
        (r#"{"user_id":1,"symbol":"AAPL","#, "invalid_json"),
        ("not json", "invalid_json"),
    ];
    for (body, code) in cases {
        let (s, e) = call(&app, Method::POST, "/alerts", body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(e["error"]["code"], code, "{body}: {e}");
        assert!(e["error"]["message"].is_string());
    }
    for uri in [
        "/alerts",
        "/alerts?user_id=abc",
        "/alerts?user_id=1&active_only=maybe",
    ] {
        let (s, e) = call(&app, Method::GET, uri, "").await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}");
        assert!(e["error"]["code"].is_string());
    }
    for uri in [
        "/alerts?user_id=1&limit=0",
        "/alerts?user_id=1&limit=1001",
        "/alerts?user_id=1&limit=-3",
        "/alerts?user_id=1&limit=ten",
        "/alerts?user_id=1&limit=",
        "/alerts?user_id=1&after_id=-1",
        "/alerts?user_id=1&after_id=abc",
        "/alerts?user_id=1&after_id=99999999999999999999",
    ] {
        let (s, e) = call(&app, Method::GET, uri, "").await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(e["error"]["code"], "invalid_query", "{uri}: {e}");
        assert!(e["error"]["message"].is_string());
    }
    let (s, e) = call(&app, Method::DELETE, "/alerts/xyz", "").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(e["error"]["code"], "invalid_id");
}

#[tokio::test]
async fn a_store_that_is_down_answers_503_json() {
    let dir = TempDir::new();
    let sw = SwitchableStore::new(Arc::new(sqlite_store(&dir).await));
    let app = app_over(sw.clone());
    sw.set_down(true);
    let body = r#"{"user_id":1,"symbol":"AAPL","target_price":150.0,"condition":"ABOVE"}"#;
    for (m, uri, b) in [
        (Method::POST, "/alerts", body),
        (Method::GET, "/alerts?user_id=1", ""),
        (Method::DELETE, "/alerts/1", ""),
    ] {
        let (s, e) = call(&app, m, uri, b).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
        assert_eq!(e["error"]["code"], "unavailable");
    }
    sw.set_down(false);
    let (s, _) = call(&app, Method::POST, "/alerts", body).await;
    assert_eq!(s, StatusCode::CREATED);
}

#[tokio::test]
async fn creating_past_the_cap_is_409_and_lists_come_in_pages() {
    let dir = TempDir::new();
    let store: Arc<dyn AlertStore> = Arc::new(sqlite_store(&dir).await);
    let app = rest::routes(LocalAlertService::with_cap(store, None, 5));
    let body = |p: u32| {
        format!(r#"{{"user_id":3,"symbol":"AAPL","target_price":{p},"condition":"ABOVE"}}"#)
    };
    let mut ids = Vec::new();
    for p in 1..=5 {
        let (s, a) = call(&app, Method::POST, "/alerts", &body(p)).await;
        assert_eq!(s, StatusCode::CREATED, "{a}");
        ids.push(a["id"].as_i64().unwrap());
    }
    let (s, e) = call(&app, Method::POST, "/alerts", &body(6)).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert_eq!(e["error"]["code"], "too_many_alerts");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(msg.contains("5 active alerts"), "{msg}");

    // The old shape still answers: every alert under "alerts", no cursor at the end.
    let (s, all) = call(&app, Method::GET, "/alerts?user_id=3", "").await;
    assert_eq!(s, StatusCode::OK);
    let got: Vec<i64> = all["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_i64().unwrap())
        .collect();
    assert_eq!(got, ids, "ascending ids");
    assert!(all.get("next_after_id").is_none(), "{all}");

    // Two at a time: 2 + 2 + 1, each page naming where the next starts.
    let mut walked = Vec::new();
    let mut uri = "/alerts?user_id=3&limit=2".to_string();
    let mut pages = 0;
    loop {
        let (s, page) = call(&app, Method::GET, &uri, "").await;
        assert_eq!(s, StatusCode::OK, "{page}");
        pages += 1;
        let alerts = page["alerts"].as_array().unwrap();
        assert!(alerts.len() <= 2);
        walked.extend(alerts.iter().map(|a| a["id"].as_i64().unwrap()));
        match page.get("next_after_id").and_then(Value::as_i64) {
            Some(next) => uri = format!("/alerts?user_id=3&limit=2&after_id={next}"),
            None => break,
        }
    }
    assert_eq!((walked, pages), (ids.clone(), 3));

    // Deleting one frees a place.
    let (s, _) = call(&app, Method::DELETE, &format!("/alerts/{}", ids[0]), "").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = call(&app, Method::POST, "/alerts", &body(7)).await;
    assert_eq!(s, StatusCode::CREATED);
}
