-- The support inbox: inboxes, their conversations and the conversations' messages.
-- Every change to them goes through the inbox's actor, its single writer.

CREATE TABLE inboxes (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    name TEXT NOT NULL,
    channel TEXT NOT NULL,
    team_id TEXT,
    auto_assign BIGINT NOT NULL,
    max_open_per_agent BIGINT,
    time_zone TEXT NOT NULL,
    business_hours TEXT,
    holidays TEXT,
    sla_policy_id TEXT
);
CREATE INDEX inboxes_created ON inboxes (workspace_id, created_at);
CREATE INDEX inboxes_updated ON inboxes (workspace_id, updated_at);

-- An API-channel inbox's token, by its digest (the token itself is shown once).
CREATE TABLE inbox_tokens (
    inbox_id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    digest TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

-- How a channel names a contact (an integrator's identifier, or `email:<address>`),
-- so that the next message from them finds the same contact at once.
CREATE TABLE inbox_contacts (
    workspace_id TEXT NOT NULL,
    inbox_id TEXT NOT NULL,
    source_id TEXT NOT NULL,
    contact_id TEXT NOT NULL,
    PRIMARY KEY (inbox_id, source_id)
);
CREATE INDEX inbox_contacts_contact ON inbox_contacts (workspace_id, contact_id);

-- Running numbers per workspace (a conversation's #1042). Taking the next one locks
-- the row until the transaction ends, so two inboxes never take the same number.
CREATE TABLE counters (
    workspace_id TEXT NOT NULL,
    name TEXT NOT NULL,
    value BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, name)
);

CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    inbox_id TEXT NOT NULL,
    contact_id TEXT NOT NULL,
    subject TEXT,
    status TEXT NOT NULL,
    snoozed_until BIGINT,
    priority TEXT NOT NULL,
    assignee_id TEXT,
    team_id TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    number BIGINT NOT NULL,
    first_reply_at BIGINT,
    last_message_at BIGINT NOT NULL,
    waiting_since BIGINT,
    sla_policy_id TEXT,
    first_response_due_at BIGINT,
    next_response_due_at BIGINT,
    resolution_due_at BIGINT,
    sla_breached BIGINT NOT NULL DEFAULT 0,
    custom_fields TEXT NOT NULL DEFAULT '{}'
);
CREATE UNIQUE INDEX conversations_number ON conversations (workspace_id, number);
CREATE INDEX conversations_created ON conversations (workspace_id, created_at);
CREATE INDEX conversations_updated ON conversations (workspace_id, updated_at);
-- Lists are by last activity (the default order), narrowed by the filters agents use:
-- each has an index that walks its rows in that order.
CREATE INDEX conversations_last_message ON conversations (workspace_id, last_message_at, id);
CREATE INDEX conversations_inbox ON conversations (workspace_id, inbox_id, last_message_at, id);
CREATE INDEX conversations_inbox_status ON conversations (workspace_id, inbox_id, status, last_message_at, id);
CREATE INDEX conversations_status ON conversations (workspace_id, status, last_message_at, id);
CREATE INDEX conversations_assignee ON conversations (workspace_id, assignee_id, last_message_at, id);
CREATE INDEX conversations_priority ON conversations (workspace_id, priority, last_message_at, id);
CREATE INDEX conversations_team ON conversations (workspace_id, team_id, last_message_at, id);
CREATE INDEX conversations_breached ON conversations (workspace_id, sla_breached, last_message_at, id);
CREATE INDEX conversations_waiting ON conversations (workspace_id, waiting_since, id);
-- A customer's message threads into their latest conversation in the inbox.
CREATE INDEX conversations_contact ON conversations (workspace_id, inbox_id, contact_id, created_at);

CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    conversation_id TEXT NOT NULL,
    inbox_id TEXT NOT NULL,
    direction TEXT,
    kind TEXT NOT NULL,
    author TEXT NOT NULL,
    text TEXT NOT NULL,
    html TEXT,
    attachments TEXT,
    delivery_status TEXT,
    external_id TEXT,
    mentions TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX messages_created ON messages (workspace_id, created_at);
CREATE INDEX messages_updated ON messages (workspace_id, updated_at);
CREATE INDEX messages_conversation ON messages (workspace_id, conversation_id, created_at, id);
CREATE UNIQUE INDEX messages_external ON messages (inbox_id, external_id) WHERE external_id IS NOT NULL;

-- How far each member has read each conversation, for their unread counts.
CREATE TABLE conversation_reads (
    workspace_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    last_read_at BIGINT NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
);

-- Replies agents insert by shortcode, with variables the server fills in.
CREATE TABLE canned_responses (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    shortcode TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE UNIQUE INDEX canned_responses_shortcode ON canned_responses (workspace_id, shortcode);
CREATE INDEX canned_responses_created ON canned_responses (workspace_id, created_at);
CREATE INDEX canned_responses_updated ON canned_responses (workspace_id, updated_at);

-- Named lists of actions applied to a conversation as one change.
CREATE TABLE macros (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    name TEXT NOT NULL,
    actions TEXT NOT NULL
);
CREATE INDEX macros_created ON macros (workspace_id, created_at);
CREATE INDEX macros_updated ON macros (workspace_id, updated_at);

-- The status a member last chose (online, busy, offline) and when: they have it while
-- connected, and are offline otherwise.
ALTER TABLE memberships ADD COLUMN availability TEXT NOT NULL DEFAULT 'online';
ALTER TABLE memberships ADD COLUMN availability_since BIGINT NOT NULL DEFAULT 0;

-- Whose turn it is in an inbox's round-robin: the member with the oldest turn (or
-- none yet) gets the next conversation.
CREATE TABLE inbox_assignments (
    workspace_id TEXT NOT NULL,
    inbox_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    turn BIGINT NOT NULL,
    PRIMARY KEY (inbox_id, user_id)
);

-- Service-level targets, counted in the inbox's business hours.
CREATE TABLE sla_policies (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    name TEXT NOT NULL,
    first_response_minutes BIGINT,
    next_response_minutes BIGINT,
    resolution_minutes BIGINT,
    business_hours_only BIGINT NOT NULL
);
CREATE INDEX sla_policies_created ON sla_policies (workspace_id, created_at);
CREATE INDEX sla_policies_updated ON sla_policies (workspace_id, updated_at);

-- Conversations' timers, as data: an SLA target's warning at 80 % and breach at 100 %,
-- and the end of a snooze. A timer fires by being deleted in the write that tells of
-- it, so a restart neither loses nor repeats one.
CREATE TABLE conversation_timers (
    workspace_id TEXT NOT NULL,
    inbox_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    target TEXT NOT NULL,
    kind TEXT NOT NULL,
    fire_at BIGINT NOT NULL,
    due_at BIGINT NOT NULL,
    PRIMARY KEY (conversation_id, target, kind)
);
CREATE INDEX conversation_timers_fire ON conversation_timers (fire_at);
