-- The current owner node of a topic, in a cluster. A node that takes over a board
-- raises the fencing token; a write of that board's events must carry the token that
-- is current, so a node that lost the board without knowing it cannot write. The
-- owner's address lets the other nodes find it while Redis is unreachable.
ALTER TABLE topic_seqs ADD COLUMN fence BIGINT NOT NULL DEFAULT 0;
ALTER TABLE topic_seqs ADD COLUMN owner_url TEXT;
