-- Each tag of a record, one row per tag: a list filtered by a tag few records carry
-- starts from here instead of reading every record's list of tags.
CREATE TABLE record_tags (
    workspace_id TEXT NOT NULL,
    object_type TEXT NOT NULL,
    tag TEXT NOT NULL,
    object_id TEXT NOT NULL,
    PRIMARY KEY (workspace_id, object_type, tag, object_id)
);
CREATE INDEX record_tags_object ON record_tags (workspace_id, object_type, object_id);

INSERT INTO record_tags (workspace_id, object_type, tag, object_id)
    SELECT DISTINCT t.workspace_id, 'contact', j.value, t.id FROM contacts t, jsonb_array_elements_text(t.tags::jsonb) AS j(value);
INSERT INTO record_tags (workspace_id, object_type, tag, object_id)
    SELECT DISTINCT t.workspace_id, 'company', j.value, t.id FROM companies t, jsonb_array_elements_text(t.tags::jsonb) AS j(value);
INSERT INTO record_tags (workspace_id, object_type, tag, object_id)
    SELECT DISTINCT t.workspace_id, 'lead', j.value, t.id FROM leads t, jsonb_array_elements_text(t.tags::jsonb) AS j(value);
INSERT INTO record_tags (workspace_id, object_type, tag, object_id)
    SELECT DISTINCT t.workspace_id, 'deal', j.value, t.id FROM deals t, jsonb_array_elements_text(t.tags::jsonb) AS j(value);
INSERT INTO record_tags (workspace_id, object_type, tag, object_id)
    SELECT DISTINCT t.workspace_id, 'conversation', j.value, t.id FROM conversations t, jsonb_array_elements_text(t.tags::jsonb) AS j(value);
