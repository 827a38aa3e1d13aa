//! The alert API over gRPC on loopback: a client behaves like the local
//! service, and REST through the client answers 503 when the server is gone.

mod common;

use std::sync::Arc;

use common::*;
use marketmux_alerts::grpc::{self, GrpcAlertClient};
use marketmux_alerts::{AlertService, Evaluator, ListQuery, LocalAlertService, ServiceError};
use marketmux_test_support::tick;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_and_server_round_trip() {
    let dir = TempDir::new();
    let store = Arc::new(sqlite_store(&dir).await);
    let rec = Recorder::default();
    let ev = Evaluator::new(store.clone(), rec.sink());
    let local = LocalAlertService::new(store, Some(ev.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let server = tokio::spawn(grpc::serve(listener, local, stop.clone()));

    let client = GrpcAlertClient::connect_lazy(&format!("http://{addr}")).unwrap();
    let a = client
        .create(new_alert(5, "AAPL", "ABOVE", 10.0))
        .await
        .unwrap();
    let b = client
        .create(new_alert(5, "AAPL", "BELOW", 5.0))
        .await
        .unwrap();
    assert_eq!(a.symbol.as_str(), "AAPL");
    assert_eq!(
        ev.len(),
        2,
        "created through gRPC, indexed by the server's evaluator"
    );

    ev.on_tick(&tick("AAPL", 11.0)).await;
    assert_eq!(rec.ids(), vec![a.id]);
    let all = client.list(5, ListQuery::default()).await.unwrap().alerts;
    assert_eq!(all.len(), 2);
    let fired = all.iter().find(|x| x.id == a.id).unwrap();
    assert!(!fired.active);
    assert_eq!(fired.triggered_price, Some(11.0));
    assert!(fired.triggered_at.is_some());
    let active = ListQuery::new(true, None, None).unwrap();
    assert_eq!(
        client.list(5, active).await.unwrap().alerts,
        vec![b.clone()]
    );
    // Pages travel through gRPC: limit, after_id and next_after_id.
    let page = client
        .list(5, ListQuery::new(false, None, Some(1)).unwrap())
        .await
        .unwrap();
    assert_eq!(page.alerts, vec![all[0].clone()]);
    assert_eq!(page.next_after_id, Some(all[0].id));
    let page = client
        .list(
            5,
            ListQuery::new(false, page.next_after_id, Some(1)).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!((page.alerts, page.next_after_id), (vec![b.clone()], None));

    assert!(!client.delete(b.id, Some(6)).await.unwrap(), "not user 6's");
    assert!(client.delete(b.id, Some(5)).await.unwrap());
    assert!(!client.delete(b.id, None).await.unwrap());
    assert_eq!(ev.len(), 0);

    stop.cancel();
    server.await.unwrap().unwrap();
    match client.list(5, ListQuery::default()).await {
        Err(ServiceError::Unavailable(_)) => {}
        other => panic!("expected unavailable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_through_grpc_answers_like_local_and_503_when_the_role_is_gone() {
    use axum::body::Body;
    use http::{Request, StatusCode};
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    let dir = TempDir::new();
    // One active alert per user: the second create is refused.
    let local = LocalAlertService::with_cap(Arc::new(sqlite_store(&dir).await), None, 1);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let server = tokio::spawn(grpc::serve(listener, local, stop.clone()));
    let app = grpc::remote_rest_routes(&format!("http://{addr}")).unwrap();

    let post = |body: &'static str| {
        Request::post("/alerts")
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap()
    };
    let ok = r#"{"user_id":2,"symbol":"MSFT","target_price":300,"condition":"ABOVE"}"#;
    let resp = app.clone().oneshot(post(ok)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let created: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(created["symbol"], "MSFT");
    let resp = app.clone().oneshot(post(ok)).await.unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::CONFLICT,
        "RESOURCE_EXHAUSTED becomes 409"
    );
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let refused: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(refused["error"]["code"], "too_many_alerts");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("1 active alerts")),
        "{refused}"
    );
    let resp = app
        .clone()
        .oneshot(
            Request::get("/alerts?user_id=2&limit=5")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let listed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(listed["alerts"].as_array().map(Vec::len), Some(1));
    assert!(listed.get("next_after_id").is_none(), "{listed}");
    let bad = r#"{"user_id":2,"symbol":"MSFT","target_price":-1,"condition":"ABOVE"}"#;
    let resp = app.clone().oneshot(post(bad)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let uri = format!("/alerts/{}?user_id=2", created["id"]);
    let resp = app
        .clone()
        .oneshot(Request::delete(uri.as_str()).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = app
        .clone()
        .oneshot(Request::delete(uri.as_str()).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    stop.cancel();
    server.await.unwrap().unwrap();
    let resp = app.oneshot(post(ok)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
}
