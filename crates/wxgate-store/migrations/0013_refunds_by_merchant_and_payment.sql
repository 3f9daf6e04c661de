-- A payment's refunds are read by merchant and payment. With only (merchant_id, created_at) and
-- (payment_id, created_at) to choose from, SQLite's planner (without statistics) took the
-- merchant's index and read every refund the merchant ever made: 4.5 ms per read at 13,700
-- refunds, 0.008 ms with this index.
CREATE INDEX refunds_merchant_payment ON refunds (merchant_id, payment_id, created_at);
-- It supersedes (payment_id, created_at): no query reads refunds by payment alone.
DROP INDEX refunds_payment;
