//! The `alerts` row as both databases return it, and its conversion to [`Alert`].

use chrono::{DateTime, Utc};
use marketmux_core::Symbol;

use super::StoreError;
use crate::model::Alert;

/// Columns of `alerts`, as every SELECT/RETURNING lists them (a macro, so
/// queries stay `&'static str` through `concat!`).
macro_rules! alert_columns {
    () => {
        "id, user_id, symbol, condition, target_price, active, created_at, triggered_at, triggered_price"
    };
}
pub(super) use alert_columns;

#[derive(sqlx::FromRow)]
pub(super) struct AlertRow {
    id: i64,
    user_id: i64,
    symbol: String,
    condition: String,
    target_price: f64,
    active: bool,
    created_at: DateTime<Utc>,
    triggered_at: Option<DateTime<Utc>>,
    triggered_price: Option<f64>,
}

impl TryFrom<AlertRow> for Alert {
    type Error = StoreError;
    fn try_from(r: AlertRow) -> Result<Self, StoreError> {
        let bad = |what: String| StoreError::Internal(format!("alert {}: {what}", r.id));
        Ok(Alert {
            id: r.id,
            user_id: r.user_id,
            symbol: Symbol::new(&r.symbol).map_err(|e| bad(e.to_string()))?,
            condition: r.condition.parse().map_err(|e| bad(format!("{e}")))?,
            target_price: r.target_price,
            active: r.active,
            created_at: r.created_at,
            triggered_at: r.triggered_at,
            triggered_price: r.triggered_price,
        })
    }
}

/// Converts rows, failing on the first corrupt one.
pub(super) fn to_alerts(rows: Vec<AlertRow>) -> Result<Vec<Alert>, StoreError> {
    rows.into_iter().map(Alert::try_from).collect()
}
