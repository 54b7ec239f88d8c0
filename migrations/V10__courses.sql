-- What a course is called, for the course page, the index and GET /courses/{id}/stats.
-- It lives in reviewflow's own schema: a website's database often has a `courses` table of
-- its own (in public, or wherever its search_path leads), and this one must neither collide
-- with it nor be found in its place by an unqualified name. The schema is not named
-- `reviewflow`: the local stack's owner is a user of that name, and PostgreSQL's default
-- search_path ("$user", public) would then put every unqualified CREATE of a later
-- migration there. Every statement names it in full: reviewflow_catalog.courses.
CREATE SCHEMA reviewflow_catalog;

-- Filled by `reviewflow import` (the course object of the Udemy-shaped API) and `reviewflow
-- demo`; a website may fill it too. A course without a row is shown as "Course <id>".
CREATE TABLE reviewflow_catalog.courses (
    id         bigint PRIMARY KEY CHECK (id > 0),
    title      text NOT NULL CHECK (title <> '' AND length(title) <= 500),
    url        text CHECK (length(url) <= 2000),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- api (and import, demo, which use its role) names courses; the course page also reads the
-- daily buckets (its chart), the verdicts (it lists valid reviews only) and the window's
-- clock (reviewflow_today(), which the chart's 90 days end at). Reads only.
GRANT USAGE ON SCHEMA reviewflow_catalog TO reviewflow_api;
GRANT SELECT, INSERT, UPDATE ON reviewflow_catalog.courses TO reviewflow_api;
GRANT SELECT ON course_daily_stats, review_verdicts, reviewflow_clock TO reviewflow_api;
