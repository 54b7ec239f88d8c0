-- What each verdict judged, so `reviewflow verify` can tell a verdict of the row as it is now
-- from one of an older image (a lost edit, even one that changed only the text):
-- digest is avro::digest of the judged image's contract columns (NULL for verdicts written
-- before this migration), oversize the columns the model judged as their oversize marker.
-- The roles' grants are on the table, so they cover the new columns.
ALTER TABLE review_verdicts
    ADD COLUMN digest   text,
    ADD COLUMN oversize text[] NOT NULL DEFAULT '{}';
