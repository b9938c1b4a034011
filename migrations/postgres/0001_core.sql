-- The CRM core: workspaces, auth, records, audit, idempotency, event log, search.

CREATE TABLE workspaces (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE memberships (
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    user_id TEXT NOT NULL REFERENCES users (id),
    role TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id);

-- Refresh tokens rotate: each use marks the row used and issues a new one in the same
-- family; presenting a used token revokes the whole family.
CREATE TABLE refresh_tokens (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    user_id TEXT NOT NULL REFERENCES users (id),
    family_id TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX api_keys_workspace ON api_keys (workspace_id);

CREATE TABLE server_settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- A POST with an Idempotency-Key: the first request's outcome, replayed to retries.
CREATE TABLE idempotency_keys (
    workspace_id TEXT NOT NULL,
    principal_id TEXT NOT NULL,
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status_code BIGINT,
    response_body TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, principal_id, key)
);

-- Every topic's ordered event stream; (topic, seq) is unique, which fences a stale
-- writer out.
CREATE TABLE event_log (
    topic TEXT NOT NULL,
    seq BIGINT NOT NULL,
    workspace_id TEXT NOT NULL,
    type TEXT NOT NULL,
    payload TEXT NOT NULL,
    actor TEXT,
    -- The client's mutation id, echoed so a client can recognise its own changes.
    cause TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (topic, seq)
);
CREATE INDEX event_log_workspace ON event_log (workspace_id, created_at);

-- The last seq handed out per topic. Taking the next one locks the row until the
-- transaction ends, so concurrent writers of one topic commit in seq order, and a
-- rolled-back seq is never seen by anyone.
CREATE TABLE topic_seqs (
    topic TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    seq BIGINT NOT NULL
);

CREATE TABLE companies (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    name TEXT NOT NULL,
    domain TEXT,
    industry TEXT,
    size TEXT,
    parent_id TEXT,
    owner_id TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    custom_fields TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX companies_created ON companies (workspace_id, created_at);
CREATE INDEX companies_updated ON companies (workspace_id, updated_at);
CREATE INDEX companies_name ON companies (workspace_id, name);
CREATE INDEX companies_domain ON companies (workspace_id, domain);

CREATE TABLE contacts (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    name TEXT NOT NULL,
    emails TEXT NOT NULL DEFAULT '[]',
    phones TEXT NOT NULL DEFAULT '[]',
    title TEXT,
    company_id TEXT,
    owner_id TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    custom_fields TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX contacts_created ON contacts (workspace_id, created_at);
CREATE INDEX contacts_updated ON contacts (workspace_id, updated_at);
CREATE INDEX contacts_name ON contacts (workspace_id, name);
CREATE INDEX contacts_company ON contacts (workspace_id, company_id);

CREATE TABLE leads (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    name TEXT NOT NULL,
    email TEXT,
    phone TEXT,
    company_name TEXT,
    title TEXT,
    source TEXT,
    status TEXT NOT NULL,
    owner_id TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    converted_contact_id TEXT,
    converted_company_id TEXT,
    converted_deal_id TEXT,
    converted_at BIGINT,
    custom_fields TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX leads_created ON leads (workspace_id, created_at);
CREATE INDEX leads_updated ON leads (workspace_id, updated_at);
CREATE INDEX leads_status ON leads (workspace_id, status);

CREATE TABLE pipelines (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    name TEXT NOT NULL
);
CREATE INDEX pipelines_created ON pipelines (workspace_id, created_at);
CREATE INDEX pipelines_updated ON pipelines (workspace_id, updated_at);

CREATE TABLE stages (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    pipeline_id TEXT NOT NULL,
    name TEXT NOT NULL,
    probability BIGINT NOT NULL,
    kind TEXT NOT NULL,
    position BIGINT NOT NULL
);
CREATE INDEX stages_created ON stages (workspace_id, created_at);
CREATE INDEX stages_updated ON stages (workspace_id, updated_at);
CREATE INDEX stages_pipeline ON stages (workspace_id, pipeline_id, position);

CREATE TABLE deals (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    title TEXT NOT NULL,
    amount BIGINT,
    currency TEXT,
    pipeline_id TEXT NOT NULL,
    stage_id TEXT NOT NULL,
    rank TEXT COLLATE "C" NOT NULL,
    owner_id TEXT,
    contact_id TEXT,
    company_id TEXT,
    expected_close_date TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    custom_fields TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX deals_created ON deals (workspace_id, created_at);
CREATE INDEX deals_updated ON deals (workspace_id, updated_at);
CREATE INDEX deals_stage ON deals (workspace_id, stage_id, rank);
CREATE INDEX deals_pipeline ON deals (workspace_id, pipeline_id);
CREATE INDEX deals_contact ON deals (workspace_id, contact_id);
CREATE INDEX deals_company ON deals (workspace_id, company_id);

CREATE TABLE activities (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT,
    body TEXT,
    contact_id TEXT,
    company_id TEXT,
    deal_id TEXT,
    occurred_at BIGINT,
    due_date TEXT,
    assignee_id TEXT,
    done BIGINT NOT NULL,
    duration_minutes BIGINT
);
CREATE INDEX activities_created ON activities (workspace_id, created_at);
CREATE INDEX activities_updated ON activities (workspace_id, updated_at);
CREATE INDEX activities_contact ON activities (workspace_id, contact_id);
CREATE INDEX activities_company ON activities (workspace_id, company_id);
CREATE INDEX activities_deal ON activities (workspace_id, deal_id);

CREATE TABLE tags (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    name TEXT NOT NULL,
    color TEXT
);
CREATE INDEX tags_created ON tags (workspace_id, created_at);
CREATE INDEX tags_updated ON tags (workspace_id, updated_at);
CREATE UNIQUE INDEX tags_u_name ON tags (workspace_id, name);

CREATE TABLE teams (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    name TEXT NOT NULL,
    description TEXT,
    member_ids TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX teams_created ON teams (workspace_id, created_at);
CREATE INDEX teams_updated ON teams (workspace_id, updated_at);

CREATE TABLE custom_field_defs (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    object_type TEXT NOT NULL,
    key TEXT NOT NULL,
    label TEXT NOT NULL,
    kind TEXT NOT NULL,
    options TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX custom_field_defs_created ON custom_field_defs (workspace_id, created_at);
CREATE INDEX custom_field_defs_updated ON custom_field_defs (workspace_id, updated_at);
CREATE UNIQUE INDEX custom_field_defs_u_key ON custom_field_defs (workspace_id, object_type, key);

CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    actor_id TEXT NOT NULL,
    action TEXT NOT NULL,
    object_type TEXT NOT NULL,
    object_id TEXT NOT NULL,
    changes TEXT NOT NULL
);
CREATE INDEX audit_log_created ON audit_log (workspace_id, created_at);
CREATE INDEX audit_log_updated ON audit_log (workspace_id, updated_at);
CREATE INDEX audit_log_object ON audit_log (workspace_id, object_id);

-- Import jobs: progress is written as rows are processed.
CREATE TABLE import_jobs (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    object_type TEXT NOT NULL,
    status TEXT NOT NULL,
    rows_total BIGINT NOT NULL,
    rows_done BIGINT NOT NULL,
    rows_failed BIGINT NOT NULL,
    errors TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX import_jobs_workspace ON import_jobs (workspace_id, created_at);

-- Full-text search: one row per searchable record with a weighted tsvector.
CREATE TABLE search_docs (
    doc_id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    object_type TEXT NOT NULL,
    object_id TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    tsv tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('simple', title), 'A') || setweight(to_tsvector('simple', body), 'B')
    ) STORED
);
CREATE INDEX search_docs_tsv ON search_docs USING GIN (tsv);
CREATE INDEX search_docs_workspace ON search_docs (workspace_id);
