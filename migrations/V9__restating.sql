-- Copies of the figures' tables, where the stats worker folds a snapshot while it is in
-- flight, so that readers keep the figures they had until it is whole (src/sink/stats/
-- restating.rs). They are made LIKE the real tables: a migration that changes a real figure
-- table must change its copy the same way (the swap names the real table's columns, so a
-- copy that lacks one fails loudly instead of dropping a figure).
CREATE SCHEMA reviewflow_restating;
CREATE TABLE reviewflow_restating.course_stats (LIKE course_stats INCLUDING ALL);
CREATE TABLE reviewflow_restating.course_daily_stats (LIKE course_daily_stats INCLUDING ALL);
CREATE TABLE reviewflow_restating.course_review_times (LIKE course_review_times INCLUDING ALL);

--   restating: a snapshot's TRUNCATE was applied and its end has not arrived on every
--              partition yet: the figures go to the copies.
--   restating_lsn: that snapshot's consistent point, which its ends carry (an end of another
--                  snapshot, one that died, does not count).
--   restated_partitions: the partitions whose end arrived.
ALTER TABLE stats_state
    ADD COLUMN restating boolean NOT NULL DEFAULT false,
    ADD COLUMN restating_lsn bigint,
    ADD COLUMN restated_partitions integer[] NOT NULL DEFAULT '{}';

GRANT USAGE ON SCHEMA reviewflow_restating TO reviewflow_worker;
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE
    ON reviewflow_restating.course_stats, reviewflow_restating.course_daily_stats,
       reviewflow_restating.course_review_times
    TO reviewflow_worker;
-- The swap empties the real helper tables before it copies them (TRUNCATE was granted on
-- them by V5) and merges course_stats.
