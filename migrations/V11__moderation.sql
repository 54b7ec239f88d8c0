-- A moderator's decision on a review is a column of the row, so the verdict stays a pure
-- function of the row (DESIGN.md): every model honours it (`score::judge`), and an overturn
-- flows through cdc like any edit. NULL: no decision, the model judges. The roles' grants on
-- reviews are on the table, so they cover the new column (the api writes it).
ALTER TABLE reviews
    ADD COLUMN moderation text CONSTRAINT reviews_moderation_check
        CHECK (moderation IN ('valid', 'fraud'));

-- GET /moderation lists the newest flagged versions first.
CREATE INDEX review_verdicts_flagged_idx
    ON review_verdicts (version DESC, position DESC) WHERE verdict = 'fraud';

-- The moderation view and a review's history read the verdicts; the api still writes none.
GRANT SELECT ON review_verdicts TO reviewflow_api;
