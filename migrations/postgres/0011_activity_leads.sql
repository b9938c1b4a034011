-- Activities may be logged on a lead (its timeline); conversion carries them over to
-- the contact it becomes.
ALTER TABLE activities ADD COLUMN lead_id TEXT;
CREATE INDEX activities_lead ON activities (workspace_id, lead_id);
