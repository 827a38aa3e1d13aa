-- Users (created on demand when an alert names a new user_id) and their price alerts.
CREATE TABLE IF NOT EXISTS users (
    id          BIGINT PRIMARY KEY,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS alerts (
    id               BIGSERIAL PRIMARY KEY,
    user_id          BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    symbol           TEXT NOT NULL,
    condition        TEXT NOT NULL CHECK (condition IN ('ABOVE', 'BELOW')),
    target_price     DOUBLE PRECISION NOT NULL CHECK (target_price > 0),
    active           BOOLEAN NOT NULL DEFAULT TRUE,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    triggered_at     TIMESTAMPTZ,
    triggered_price  DOUBLE PRECISION
);

-- Evaluators load the active alerts; users list their own.
CREATE INDEX IF NOT EXISTS alerts_active_symbol ON alerts (symbol) WHERE active;
CREATE INDEX IF NOT EXISTS alerts_user ON alerts (user_id, id);
