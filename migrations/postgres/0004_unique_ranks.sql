-- No two cards of a column share an ordering key: a tie would leave their order to
-- their ids instead of the users' drops, and no card could be placed between them.
-- Keys are made unique by construction; this index is the last guard.
--
-- Ties left by earlier versions are broken first, keeping the tied cards' order (by
-- id) and their place among the others: each tied card after the first takes its key
-- followed by '0', its position among the ties in six digits and '1', which sorts
-- after the shared key and before any key the server would have put above it.
UPDATE deals d
SET rank = d.rank || '0' || lpad(t.n::text, 6, '0') || '1'
FROM (
    SELECT id, workspace_id,
           row_number() OVER (PARTITION BY workspace_id, stage_id, rank ORDER BY id) - 1 AS n
    FROM deals
) t
WHERE t.workspace_id = d.workspace_id AND t.id = d.id AND t.n > 0;
DROP INDEX deals_stage;
CREATE UNIQUE INDEX deals_stage ON deals (workspace_id, stage_id, (rank COLLATE "C"));
