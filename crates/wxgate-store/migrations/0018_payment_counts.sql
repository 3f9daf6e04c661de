-- Payments by status and integration, kept by the writes that make and move payments, so that
-- `/metrics` reads a few rows whatever the number of payments (it read every payment at each
-- scrape). Each count is spread over slots (a slot chosen by the payment's id), so that
-- concurrent PostgreSQL transactions seldom wait on each other's row; a count is the sum of
-- its slots, and one slot may go below zero.
CREATE TABLE payment_counts (
    status TEXT NOT NULL,
    integration TEXT NOT NULL,
    slot BIGINT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (status, integration, slot)
);
INSERT INTO payment_counts (status, integration, slot, n)
    SELECT status, integration, 0, COUNT(*) FROM payments GROUP BY status, integration;
