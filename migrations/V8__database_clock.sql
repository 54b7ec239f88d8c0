-- The clock of the 90-day window: the database's. The stats worker rolls the window at the
-- UTC midnight of this clock, and `reviewflow verify` (sql/truth.sql) and `replay` compute the
-- figures of the day it reads, so the worker and the oracle cannot disagree on "today"
-- because two machines' clocks do. A test moves it by setting one offset here, which every
-- reader sees (reviewflow_set_clock); in production the offset stays 0.

-- One row: how far the window's clock is from the server's. Microseconds rather than an
-- interval, because a day in an interval is a calendar day of the session's time zone (23
-- or 25 hours across a DST change), and the offset must be the same for every session.
CREATE TABLE reviewflow_clock (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    offset_us bigint  NOT NULL DEFAULT 0
);
INSERT INTO reviewflow_clock DEFAULT VALUES;

-- The window's now: the transaction's start (now()), so one statement, or a verify snapshot,
-- sees one instant however long it runs.
CREATE FUNCTION reviewflow_now() RETURNS timestamptz
    LANGUAGE sql STABLE
    AS $$ SELECT now() + (SELECT offset_us FROM reviewflow_clock) * interval '1 microsecond' $$;

-- The window's today: the UTC day of reviewflow_now() (DESIGN.md: a review is recent when
-- its UTC day is after today - 90).
CREATE FUNCTION reviewflow_today() RETURNS date
    LANGUAGE sql STABLE
    AS $$ SELECT (reviewflow_now() AT TIME ZONE 'UTC')::date $$;

-- Sets the window's clock so that it reads `at` now, and returns the offset set (in
-- microseconds). For tests; only the owner may call it.
CREATE FUNCTION reviewflow_set_clock(at timestamptz) RETURNS bigint
    LANGUAGE sql
    AS $$ UPDATE reviewflow_clock
          SET offset_us = (extract(epoch FROM at - now()) * 1000000)::bigint
          RETURNING offset_us $$;
REVOKE EXECUTE ON FUNCTION reviewflow_set_clock(timestamptz) FROM PUBLIC;

-- The stats worker reads the clock (verify and replay run as the owner).
GRANT SELECT ON reviewflow_clock TO reviewflow_worker;
