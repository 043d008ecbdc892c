-- celery-cnc PostgreSQL schema, version 2: pre-aggregated statistics and
-- search indexed off the write path.
--
-- * tasks.finished_at: when the task reached its current ready state
--   (`Task::finished_at`), indexed for heatmaps over odd time ranges.
-- * task_minutes: finished tasks per minute x name x worker x state,
--   maintained by `apply` (a task moves between rows when its final state,
--   name or worker changes), so throughput and heatmaps never scan tasks.
-- * retry_minutes: `task-retried` events per minute.
-- * task_names.task_count: tasks per name, so `task_names()` is a tiny read.
-- * task_search: the lower-cased search text of each task (by `seq`) with
--   the trigram GIN index, which moves here from `tasks.search_text`.
--   Maintaining that index was most of the cost of `apply` (about 75% of it
--   in a batch of 1,000); it is now written by a background indexer.
-- * search_pending: the durable queue of tasks whose searchable text changed,
--   filled by `apply` in the batch transaction and drained by the indexer
--   (`due`: when to index; `ver`: bumped on every change, so the indexer
--   deletes only the version it indexed).
-- Every new structure is back-filled from the v1 data.

CREATE TABLE task_search (
    seq  bigint PRIMARY KEY,
    text text NOT NULL
);
INSERT INTO task_search (seq, text)
    SELECT seq, search_text FROM tasks WHERE search_text <> '';
CREATE INDEX task_search_trgm ON task_search USING gin (text @TRGM@.gin_trgm_ops);
-- Drops the v1 index `tasks_search` with it.
ALTER TABLE tasks DROP COLUMN search_text;

CREATE SEQUENCE search_pending_ver;
CREATE TABLE search_pending (
    seq   bigint PRIMARY KEY,
    -- first queued (epoch seconds, server clock)
    since double precision NOT NULL,
    -- when to index: at once for final tasks, later for others
    due   double precision NOT NULL,
    -- a fresh number on every change (a sequence: never reused)
    ver   bigint NOT NULL DEFAULT nextval('search_pending_ver')
);
-- Tasks queued before the upgrade: none; everything was back-filled above.
CREATE INDEX search_pending_due ON search_pending (due);

ALTER TABLE tasks ADD COLUMN finished_at double precision;
UPDATE tasks SET finished_at = CASE state
        WHEN 'SUCCESS'  THEN (data::jsonb ->> 'succeeded_at')::double precision
        WHEN 'FAILURE'  THEN (data::jsonb ->> 'failed_at')::double precision
        WHEN 'REVOKED'  THEN (data::jsonb ->> 'revoked_at')::double precision
        WHEN 'REJECTED' THEN (data::jsonb ->> 'rejected_at')::double precision
    END
    WHERE state IN ('SUCCESS', 'FAILURE', 'REVOKED', 'REJECTED');
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;

ALTER TABLE task_names ADD COLUMN task_count bigint NOT NULL DEFAULT 0;
INSERT INTO task_names (name, task_count)
    SELECT name, count(*) FROM tasks WHERE name IS NOT NULL GROUP BY name
    ON CONFLICT (name) DO UPDATE SET task_count = EXCLUDED.task_count;

CREATE TABLE task_minutes (
    minute bigint NOT NULL,
    name   text COLLATE "C" NOT NULL,
    worker text COLLATE "C" NOT NULL,
    state  text COLLATE "C" NOT NULL,
    count  bigint NOT NULL,
    PRIMARY KEY (minute, name, worker, state)
);
INSERT INTO task_minutes (minute, name, worker, state, count)
    SELECT floor(finished_at / 60)::bigint, coalesce(name, ''), coalesce(worker, ''), state, count(*)
    FROM tasks WHERE finished_at IS NOT NULL GROUP BY 1, 2, 3, 4;

CREATE TABLE retry_minutes (
    minute bigint PRIMARY KEY,
    count  bigint NOT NULL
);
INSERT INTO retry_minutes (minute, count)
    SELECT floor(ts / 60)::bigint, count(*) FROM task_events
    WHERE kind = 'task-retried' GROUP BY 1;
CREATE INDEX task_events_retried ON task_events (ts) WHERE kind = 'task-retried';
