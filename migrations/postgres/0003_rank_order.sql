-- A stage's cards in bytewise order of their ordering keys, the order the store sorts
-- them in (COLLATE "C"): finding the last card of a column, or a card's neighbour, is a
-- short walk from one end of this index rather than a scan of the whole column, which
-- after many moves is mostly dead row versions until vacuum.
DROP INDEX deals_stage;
CREATE INDEX deals_stage ON deals (workspace_id, stage_id, (rank COLLATE "C"));
