-- Members join by invitation: an admin invites an e-mail address with a role; the
-- person behind it accepts (logged in, or by signing up) with the invitation's token,
-- of which only a digest is kept. Nothing of the invitee is shown before they accept.
CREATE TABLE invitations (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    email TEXT NOT NULL,
    role TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    invited_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    accepted_at BIGINT,
    accepted_by TEXT,
    revoked_at BIGINT
);
CREATE INDEX invitations_workspace ON invitations (workspace_id, created_at);
