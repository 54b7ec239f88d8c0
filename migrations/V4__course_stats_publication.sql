-- course_stats streamed by a second CDC reader into the compacted topic course-stats, as the
-- original design's long-term-stats and recent-stats topics offered the figures to other
-- consumers. TRUNCATE is not published: a compacted topic needs a key on every record, and
-- the stats worker empties course_stats with DELETE, which is.
CREATE PUBLICATION reviewflow_stats FOR TABLE course_stats WITH (publish = 'insert, update, delete');
