-- v3: worker + state together, newest first, for the task list's filter
-- pairs and triples (a name on top is checked on that pair's rows only).
CREATE INDEX IF NOT EXISTS tasks_worker_state_seq ON tasks (worker, state, seq);
