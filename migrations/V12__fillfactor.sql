-- The stats worker rewrites the same course rows batch after batch. Room left free on each
-- page lets PostgreSQL keep such an update on the row's own page (a HOT update: no new
-- index entry, and the page prunes its dead versions itself) instead of moving the row
-- elsewhere and adding an entry to each index, which the next batch's lookups then wade
-- through. It applies to pages written from now on; VACUUM FULL rewrites the older ones.
ALTER TABLE course_stats SET (fillfactor = 80);
ALTER TABLE course_daily_stats SET (fillfactor = 80);
