-- Indexes nothing reads, kept up by every write: audit entries are never changed, so
-- their lists (and `updated_since`) go by created_at; nothing reads the event log by
-- workspace, only by topic and seq.
DROP INDEX IF EXISTS audit_log_updated;
DROP INDEX IF EXISTS event_log_workspace;
