-- The refund and payout syncs claim their open rows due first, as the payment sync does
-- (0015). With the index on sync_due_at alone, PostgreSQL's planner, on tables without
-- statistics, read and sorted every row to claim a few. These indexes hold only the open rows
-- in the order they fall due, under the same condition the claims say, so both planners use
-- them with or without statistics; a finished refund or payout leaves them.
DROP INDEX refunds_sync_due;
CREATE INDEX refunds_open_sync_due ON refunds (sync_due_at)
    WHERE status IN ('pending', 'abnormal');
DROP INDEX payouts_sync_due;
CREATE INDEX payouts_open_sync_due ON payouts (sync_due_at)
    WHERE status IN ('pending', 'awaiting_confirmation', 'processing');
