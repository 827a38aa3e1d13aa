-- Counting a user's active alerts (the per-user cap) without reading their history.
CREATE INDEX IF NOT EXISTS alerts_user_active ON alerts (user_id) WHERE active;
