//! With authentication on, the alert API acts only for the token's user:
//! a user lists, creates and deletes only their own alerts.

mod dev_common;

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use marketmux_test_support::TempDir;
use serde_json::{json, Value};

const SECRET: &str = "alerts-auth-secret-of-at-least-32-bytes";

fn token(user: i64) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 300;
    encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": user.to_string(), "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn users_see_and_change_only_their_own_alerts() {
    let dir = TempDir::new("alerts-auth");
    let node = dev_common::start_dev(dir.path(), &["--jwt-secret", SECRET]).await;
    let base = format!("http://{}", node.http_addr());
    let http = reqwest::Client::new();
    let alice = token(7);
    let bob = token(8);

    // No token: refused.
    let r = http.get(format!("{base}/alerts")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(format!("{base}/alerts"))
        .json(&json!({"symbol":"AAPL","target_price":1.0,"condition":"ABOVE"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // The token's user is used; naming another user is forbidden.
    let r = http
        .post(format!("{base}/alerts"))
        .bearer_auth(&alice)
        .json(&json!({"symbol":"AAPL","target_price":150.0,"condition":"ABOVE"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["user_id"], 7);
    let r = http
        .post(format!("{base}/alerts"))
        .bearer_auth(&alice)
        .json(&json!({"user_id":8,"symbol":"AAPL","target_price":150.0,"condition":"ABOVE"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // Bob sees none of Alice's alerts, cannot ask for them, and cannot delete them.
    let r = http
        .get(format!("{base}/alerts"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["alerts"], json!([]));
    let r = http
        .get(format!("{base}/alerts?user_id=7"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let id = created["id"].as_i64().unwrap();
    let r = http
        .delete(format!("{base}/alerts/{id}"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Alice does.
    let r = http
        .get(format!("{base}/alerts"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["alerts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let r = http
        .delete(format!("{base}/alerts/{id}"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    node.stop().await.unwrap();
}
