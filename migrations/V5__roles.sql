-- Least-privilege group roles, one per kind of stage (README, "Security"). They cannot log
-- in: login users are made members (`reviewflow stack roles` on the local stack, a DBA's
-- CREATE ROLE ... IN ROLE elsewhere). Roles belong to the cluster, so an existing one is
-- reused (another database of the cluster may have created it); the grants are this
-- database's. A migration that adds a table grants it to the roles that need it.

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['reviewflow_cdc', 'reviewflow_api', 'reviewflow_worker'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
            IF NOT (SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user) THEN
                RAISE EXCEPTION 'role % does not exist and % may not create roles', r, current_user
                    USING HINT = format('ask a database administrator to run CREATE ROLE %I NOLOGIN '
                                        '(and the same for the other reviewflow_* roles), then migrate again', r);
            END IF;
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL; -- created meanwhile by a migration of another database
            END;
        END IF;
    END LOOP;
END $$;

-- Every role reads the schema version, so a stage without the owner's URL can check that
-- the schema is migrated before it starts.
GRANT SELECT ON refinery_schema_history TO reviewflow_cdc, reviewflow_api, reviewflow_worker;

-- The schema registry's tables: every stage may register the schemas it writes with.
GRANT SELECT, INSERT, UPDATE, DELETE
    ON registry_schemas, registry_subject_versions, registry_config
    TO reviewflow_cdc, reviewflow_api, reviewflow_worker;
GRANT USAGE ON SEQUENCE registry_schemas_id_seq TO reviewflow_cdc, reviewflow_api, reviewflow_worker;

-- cdc: reads what it publishes (the snapshot; its lock needs SELECT); writes no table.
GRANT SELECT ON reviews, course_stats TO reviewflow_cdc;

-- api (and import, demo): the application's writes to reviews; the figures read only.
GRANT SELECT, INSERT, UPDATE, DELETE ON reviews TO reviewflow_api;
GRANT USAGE ON SEQUENCE reviews_id_seq TO reviewflow_api;
GRANT SELECT ON course_stats TO reviewflow_api;

-- workers (fraud, verdicts, stats): what the sinks own. TRUNCATE for the buckets the stats
-- worker empties after a TRUNCATE of reviews.
GRANT SELECT, INSERT, UPDATE, DELETE
    ON course_stats, course_daily_stats, course_review_times, review_verdicts, sink_offsets, stats_state
    TO reviewflow_worker;
GRANT TRUNCATE ON course_daily_stats, course_review_times TO reviewflow_worker;
