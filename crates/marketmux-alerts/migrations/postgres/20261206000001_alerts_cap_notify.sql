-- Counting a user's active alerts (the per-user cap) without reading their history.
CREATE INDEX IF NOT EXISTS alerts_user_active ON alerts (user_id) WHERE active;

-- Every instance learns of every write at once: each insert, update and
-- delete of an alert is announced on channel `marketmux_alerts` when its
-- transaction commits, as `changed:<id>` (read it again) or `removed:<id>`
-- (deleted or fired).
CREATE OR REPLACE FUNCTION marketmux_alerts_notify() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('marketmux_alerts', 'removed:' || OLD.id);
    ELSIF NEW.active THEN
        PERFORM pg_notify('marketmux_alerts', 'changed:' || NEW.id);
    ELSE
        PERFORM pg_notify('marketmux_alerts', 'removed:' || NEW.id);
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS alerts_notify ON alerts;
CREATE TRIGGER alerts_notify AFTER INSERT OR UPDATE OR DELETE ON alerts
    FOR EACH ROW EXECUTE FUNCTION marketmux_alerts_notify();
