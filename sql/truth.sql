-- The from-scratch truth of DESIGN.md: per-course figures over the current, valid versions
-- of the reviews. `reviewflow verify` compares course_stats against exactly this query.
-- A review's current verdict is the one for its newest version (commit LSN). "Today" is the
-- database's clock, reviewflow_today() (migration V8), the day the stats worker rolls by.
WITH current_verdict AS (
    SELECT DISTINCT ON (review_id) review_id, verdict
    FROM review_verdicts
    ORDER BY review_id, version DESC
),
valid AS (
    SELECT r.course_id,
           r.rating,
           r.created_at,
           floor(r.rating)::int AS stars,
           (r.created_at AT TIME ZONE 'UTC')::date > reviewflow_today() - 90 AS recent
    FROM reviews r
    JOIN current_verdict v ON v.review_id = r.id
    WHERE v.verdict = 'valid'
)
SELECT course_id,
       count(*)                                        AS review_count,
       sum(rating)                                     AS rating_sum,
       round(sum(rating) / count(*), 4)                AS rating_avg,
       count(*) FILTER (WHERE stars = 0)               AS stars_0,
       count(*) FILTER (WHERE stars = 1)               AS stars_1,
       count(*) FILTER (WHERE stars = 2)               AS stars_2,
       count(*) FILTER (WHERE stars = 3)               AS stars_3,
       count(*) FILTER (WHERE stars = 4)               AS stars_4,
       count(*) FILTER (WHERE stars = 5)               AS stars_5,
       max(created_at)                                 AS last_review_at,
       count(*) FILTER (WHERE recent)                  AS recent_review_count,
       coalesce(sum(rating) FILTER (WHERE recent), 0)  AS recent_rating_sum,
       round(sum(rating) FILTER (WHERE recent)
             / NULLIF(count(*) FILTER (WHERE recent), 0), 4) AS recent_rating_avg,
       count(*) FILTER (WHERE recent AND stars = 0)    AS recent_stars_0,
       count(*) FILTER (WHERE recent AND stars = 1)    AS recent_stars_1,
       count(*) FILTER (WHERE recent AND stars = 2)    AS recent_stars_2,
       count(*) FILTER (WHERE recent AND stars = 3)    AS recent_stars_3,
       count(*) FILTER (WHERE recent AND stars = 4)    AS recent_stars_4,
       count(*) FILTER (WHERE recent AND stars = 5)    AS recent_stars_5
FROM valid
GROUP BY course_id
