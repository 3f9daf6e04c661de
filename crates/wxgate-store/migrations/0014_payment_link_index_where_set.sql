-- A link's payments are read by merchant and link, newest first. The index on payment_link_id
-- alone had two faults:
-- * SQLite's planner (without statistics) preferred (merchant_id, created_at) to it, and so
--   read every payment the merchant ever made to list one link's;
-- * most payments come from no link, and their NULL payment_link_id was still an entry: one
--   more index page written by every create.
-- This index answers that query's two equalities and holds only the payments a link made
-- (`payment_link_id = $n` implies NOT NULL, so SQLite and PostgreSQL both use it).
DROP INDEX payments_payment_link;
CREATE INDEX payments_payment_link ON payments (merchant_id, payment_link_id, created_at)
    WHERE payment_link_id IS NOT NULL;
