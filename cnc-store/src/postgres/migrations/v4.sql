-- v4: runtime statistics (exact percentiles) for one task name over a time
-- window read only this index: the name's finished tasks in order of
-- succeeded_at, with the runtime carried along (an index-only scan).
CREATE INDEX IF NOT EXISTS tasks_runtime_done ON tasks (name, succeeded_at) INCLUDE (runtime)
    WHERE runtime IS NOT NULL;
