-- Users (created on demand when an alert names a new user_id) and their price alerts.
CREATE TABLE IF NOT EXISTS users (
    id          INTEGER PRIMARY KEY,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE IF NOT EXISTS alerts (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id          INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    symbol           TEXT NOT NULL,
    condition        TEXT NOT NULL CHECK (condition IN ('ABOVE', 'BELOW')),
    target_price     REAL NOT NULL CHECK (target_price > 0),
    active           BOOLEAN NOT NULL DEFAULT 1,
    created_at       TEXT NOT NULL,
    triggered_at     TEXT,
    triggered_price  REAL
);

CREATE INDEX IF NOT EXISTS alerts_active_symbol ON alerts (symbol) WHERE active;
CREATE INDEX IF NOT EXISTS alerts_user ON alerts (user_id, id);
