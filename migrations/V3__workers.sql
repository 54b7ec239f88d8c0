-- What the fraud verdict sink and the stats worker keep beside the contract tables.

-- Two changes of one review in one transaction share the commit LSN (the version); the later
-- one (higher position in the transaction) is the version's final image and wins.
ALTER TABLE review_verdicts ADD COLUMN position bigint NOT NULL DEFAULT 0;

-- The source position (commit LSN, position) of the last change a sink applied from each
-- partition: the CDC reader re-sends changes after a crash, with the same position, and a
-- sink drops any change at or below this.
ALTER TABLE sink_offsets
    ADD COLUMN last_lsn      bigint,
    ADD COLUMN last_position bigint;

-- last_review_at is max(created_at) over the valid reviews, and a delete of the newest review
-- must find the one before it: a multiset of creation times per course, without review ids.
CREATE TABLE course_review_times (
    course_id    bigint      NOT NULL,
    created_at   timestamptz NOT NULL,
    review_count bigint      NOT NULL,
    PRIMARY KEY (course_id, created_at)
);

-- The stats worker's own clock-dependent and table-wide state (one row).
--   rolled_through: the last UTC day whose expiring window day was applied to the 90-day figures.
--   truncated_lsn, truncated_position: source position (commit LSN, position in the
--                   transaction) of the last TRUNCATE of reviews; changes at or before it are
--                   void, whichever partition still carries them.
CREATE TABLE stats_state (
    singleton          boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    rolled_through     date,
    truncated_lsn      bigint NOT NULL DEFAULT 0,
    truncated_position bigint NOT NULL DEFAULT 0
);
INSERT INTO stats_state DEFAULT VALUES;
