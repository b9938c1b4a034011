-- The e-mail channel. An inbox says how its channel is doing (connecting, importing,
-- syncing, failing) with a detail in words; a message keeps the quoted history apart
-- from its new text, and why its delivery failed.
ALTER TABLE inboxes ADD COLUMN channel_status TEXT;
ALTER TABLE inboxes ADD COLUMN channel_detail TEXT;
ALTER TABLE messages ADD COLUMN quoted TEXT;
ALTER TABLE messages ADD COLUMN delivery_error TEXT;

-- An e-mail inbox's servers, with passwords sealed (never stored in the clear), and
-- where its sync stands: the folder's UIDVALIDITY and the last UID taken, written in
-- the transaction that takes the mail, so a restart resumes exactly there.
CREATE TABLE mail_accounts (
    inbox_id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    imap_host TEXT NOT NULL,
    imap_port BIGINT NOT NULL,
    imap_security TEXT NOT NULL,
    imap_username TEXT NOT NULL,
    imap_password TEXT NOT NULL,
    imap_folder TEXT NOT NULL,
    import_days BIGINT NOT NULL,
    poll_secs BIGINT NOT NULL,
    smtp_host TEXT NOT NULL,
    smtp_port BIGINT NOT NULL,
    smtp_security TEXT NOT NULL,
    smtp_username TEXT,
    smtp_password TEXT,
    from_name TEXT,
    from_address TEXT NOT NULL,
    uid_validity BIGINT,
    last_uid BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL
);

-- Replies waiting for (or past) SMTP: written in the transaction of the reply itself.
-- `sending` with `claimed_at` marks an attempt in flight; one left behind by a crash is
-- taken again after a while.
CREATE TABLE mail_outbox (
    message_id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    inbox_id TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_at BIGINT NOT NULL,
    claimed_at BIGINT,
    error TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX mail_outbox_due ON mail_outbox (state, next_at);

-- Members may have their notifications (assigned to them, mentioned) sent by e-mail,
-- through the server's own SMTP server; those mails wait here, written with the
-- event that caused them.
ALTER TABLE memberships ADD COLUMN notify_email BIGINT NOT NULL DEFAULT 0;
CREATE TABLE notify_outbox (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_at BIGINT NOT NULL,
    error TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX notify_outbox_due ON notify_outbox (state, next_at);
