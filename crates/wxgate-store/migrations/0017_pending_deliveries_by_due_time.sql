-- Webhook deliveries are claimed pending and due first. On a new PostgreSQL database (tables
-- without rows or statistics) the claim's generic plan, which a pooled connection keeps, read
-- the index of every delivery's due time and then updated the rows it chose by a scan of
-- every delivery ever made. A delivery stops being due when it stops being pending (delivered,
-- dead or cancelled: its next_attempt_at is NULL), so this index holds only the pending ones,
-- and the claim says `status = 'pending'` word for word, so both planners use it.
DROP INDEX webhook_deliveries_due;
CREATE INDEX webhook_deliveries_pending_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
