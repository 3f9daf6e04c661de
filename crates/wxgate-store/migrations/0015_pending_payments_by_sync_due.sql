-- The status sync claims the pending payments due first. The index on sync_due_at alone had two
-- faults:
-- * PostgreSQL's planner, on tables it has no statistics for yet (a new database, or a server
--   without autovacuum), guessed the claim's conditions matched a handful of rows and read and
--   sorted every payment instead: 7.5 ms of the server's CPU per claim at 10,000 payments;
-- * a payment that is no longer pending keeps a NULL sync_due_at, still an entry.
-- This index holds only the pending payments in the order they fall due; the claim and the
-- count of due payments both say `status = 'pending'`, so both planners use it with or without
-- statistics.
DROP INDEX payments_sync_due;
CREATE INDEX payments_pending_sync_due ON payments (sync_due_at) WHERE status = 'pending';
