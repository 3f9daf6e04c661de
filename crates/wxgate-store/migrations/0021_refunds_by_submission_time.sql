-- When WeChat took a refund. WeChat's trade bill puts a refund in the day it was started at
-- WeChat, which for a refund sent again later (after NOT_ENOUGH, or an unclear answer) is not
-- the day it was made here; reconciliation reads a day's refunds by this time. Refunds WeChat
-- took before this column existed are taken to have been taken when they were made.
ALTER TABLE refunds ADD COLUMN submitted_at BIGINT;
UPDATE refunds SET submitted_at = created_at WHERE submitted = 1;
CREATE INDEX refunds_merchant_submitted ON refunds (merchant_id, submitted_at)
    WHERE submitted_at IS NOT NULL;
