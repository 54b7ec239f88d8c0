-- A course's statistics, as the website reads them. psql -v course_id=42 -f sql/course_stats.sql
SELECT course_id,
       review_count, rating_avg, rating_sum,
       stars_0, stars_1, stars_2, stars_3, stars_4, stars_5,
       last_review_at,
       recent_review_count, recent_rating_avg, recent_rating_sum,
       recent_stars_0, recent_stars_1, recent_stars_2, recent_stars_3, recent_stars_4, recent_stars_5,
       updated_at
FROM course_stats
WHERE course_id = :course_id;
