//! The `alerts` role on a PostgreSQL database of a test's own, shared by the
//! alerts role tests.

use clap::Parser as _;
use marketmux::cli::{Cli, Role};
use marketmux::node::Node;
use marketmux_core::Timestamp;
use sqlx::Connection as _;

pub const ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Creates a database named `marketmux_test_{tag}_…`; returns its name and URL.
pub async fn create_db(tag: &str) -> (String, String) {
    let mut conn = sqlx::PgConnection::connect(ADMIN).await.unwrap_or_else(|e| {
        panic!("this test needs PostgreSQL at {ADMIN} (user postgres, trust auth); install and start it: {e}")
    });
    let name = format!(
        "marketmux_test_{tag}_{:016x}",
        Timestamp::now().0 as u64 ^ u64::from(std::process::id()) << 32
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    (
        name.clone(),
        format!("postgres://postgres@127.0.0.1:5432/{name}"),
    )
}

/// Drops the database `name`, connections and all.
pub async fn drop_db(name: &str) {
    if let Ok(mut conn) = sqlx::PgConnection::connect(ADMIN).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await;
    }
}

/// Starts an alerts instance reading `brokers` and storing in `db`, reloading
/// its alerts every `reload_secs`.
#[allow(dead_code)] // the fault tests start the role as a process instead
pub async fn alerts_role(brokers: &str, db: &str, reload_secs: &str) -> Node {
    let cli = Cli::parse_from([
        "marketmux",
        "alerts",
        "--kafka-brokers",
        brokers,
        "--database-url",
        db,
        "--grpc-listen",
        "127.0.0.1:0",
        "--start-from",
        "earliest",
        "--reload-secs",
        reload_secs,
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let Some(Role::Alerts(args)) = cli.role else {
        panic!("not the alerts role")
    };
    marketmux::roles::alerts::start(args)
        .await
        .expect("alerts role starts")
}
