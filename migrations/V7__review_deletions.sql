-- review_verdicts keeps a deleted review's verdicts (they are history), so `reviewflow verify`
-- needs to know which deletes the pipeline saw: a review with verdicts and no row is a lost
-- delete unless one of these is newer than its newest verdict.

-- The course of the review each verdict judged, so a difference about a review that has no
-- row any more can still name its course (NULL: a row without a course, or a verdict written
-- before this migration).
ALTER TABLE review_verdicts ADD COLUMN course_id bigint;

-- The newest delete of each review id the fraud worker saw (an UPDATE that changed the id
-- deletes the old one): the source position (commit LSN, position in the transaction).
CREATE TABLE review_deletions (
    review_id  bigint PRIMARY KEY,
    course_id  bigint,
    version    pg_lsn NOT NULL,
    position   bigint NOT NULL,
    deleted_at timestamptz NOT NULL DEFAULT now()
);

-- One row: every review whose newest verdict is older than (deleted_before_lsn,
-- deleted_before_position) and has no row was deleted as the pipeline saw it: the newest
-- TRUNCATE of reviews (or the restatement of a new snapshot), or the consistent point of a
-- `replay --from snapshot`, which judged every row that existed then.
CREATE TABLE verdicts_state (
    singleton               boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    deleted_before_lsn      pg_lsn NOT NULL DEFAULT '0/0',
    deleted_before_position bigint NOT NULL DEFAULT 0
);
INSERT INTO verdicts_state DEFAULT VALUES;

-- The verdict sink (and replay, run as the owner) writes them; the api role neither reads
-- nor writes them (it has no grant on review_verdicts either).
GRANT SELECT, INSERT, UPDATE, DELETE ON review_deletions, verdicts_state TO reviewflow_worker;
