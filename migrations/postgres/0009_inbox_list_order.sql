-- Lists break ties between equal times by id compared byte by byte (COLLATE "C", the
-- order cursors use). An index whose id column has the database's collation cannot
-- give that order, so PostgreSQL read every matching row and sorted them; these give
-- it, and a page is read straight off the index.
DROP INDEX conversations_last_message;
DROP INDEX conversations_inbox;
DROP INDEX conversations_inbox_status;
DROP INDEX conversations_status;
DROP INDEX conversations_assignee;
DROP INDEX conversations_priority;
DROP INDEX conversations_team;
DROP INDEX conversations_breached;
DROP INDEX conversations_waiting;
DROP INDEX messages_conversation;
CREATE INDEX conversations_last_message ON conversations (workspace_id, last_message_at, (id COLLATE "C"));
CREATE INDEX conversations_inbox ON conversations (workspace_id, inbox_id, last_message_at, (id COLLATE "C"));
CREATE INDEX conversations_inbox_status ON conversations (workspace_id, inbox_id, status, last_message_at, (id COLLATE "C"));
CREATE INDEX conversations_status ON conversations (workspace_id, status, last_message_at, (id COLLATE "C"));
CREATE INDEX conversations_assignee ON conversations (workspace_id, assignee_id, last_message_at, (id COLLATE "C"));
CREATE INDEX conversations_priority ON conversations (workspace_id, priority, last_message_at, (id COLLATE "C"));
CREATE INDEX conversations_team ON conversations (workspace_id, team_id, last_message_at, (id COLLATE "C"));
CREATE INDEX conversations_breached ON conversations (workspace_id, sla_breached, last_message_at, (id COLLATE "C"));
CREATE INDEX conversations_waiting ON conversations (workspace_id, waiting_since, (id COLLATE "C"));
CREATE INDEX messages_conversation ON messages (workspace_id, conversation_id, created_at, (id COLLATE "C"));
