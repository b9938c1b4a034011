-- Imports meet the records already there by a key (e-mail, domain, id, or a chosen
-- field) in a mode (create, skip, update, upsert); each row is counted as exactly one
-- of created, updated, skipped or failed.
ALTER TABLE import_jobs ADD COLUMN mode TEXT NOT NULL DEFAULT 'create';
ALTER TABLE import_jobs ADD COLUMN key_field TEXT;
ALTER TABLE import_jobs ADD COLUMN rows_created BIGINT NOT NULL DEFAULT 0;
ALTER TABLE import_jobs ADD COLUMN rows_updated BIGINT NOT NULL DEFAULT 0;
ALTER TABLE import_jobs ADD COLUMN rows_skipped BIGINT NOT NULL DEFAULT 0;
