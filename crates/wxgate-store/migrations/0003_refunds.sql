-- Refunds. A payment keeps running sums so that the rules (never refund more than was paid, at
-- most 50 refunds) are checked and the amount reserved in one conditional UPDATE.

ALTER TABLE payments ADD COLUMN amount_refunded BIGINT NOT NULL DEFAULT 0;
-- Held by refunds that have not failed (pending, abnormal, succeeded).
ALTER TABLE payments ADD COLUMN amount_reserved BIGINT NOT NULL DEFAULT 0;
ALTER TABLE payments ADD COLUMN refund_count BIGINT NOT NULL DEFAULT 0;

-- Set for cross-border merchants, who use WeChat's /v3/global/ endpoints.
ALTER TABLE merchants ADD COLUMN merchant_category_code TEXT;

CREATE INDEX payments_paid_after_close ON payments (status) WHERE status = 'paid_after_close';

CREATE TABLE refunds (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    payment_id TEXT NOT NULL REFERENCES payments (id),
    merchant_refund_id TEXT NOT NULL,
    -- Sent to WeChat, the same on every retry.
    out_refund_no TEXT NOT NULL,
    amount BIGINT NOT NULL,
    currency TEXT NOT NULL,
    reason TEXT,
    status TEXT NOT NULL,
    version BIGINT NOT NULL,
    fingerprint TEXT NOT NULL,
    -- 1 once WeChat has accepted the request.
    submitted BIGINT NOT NULL,
    wechat_refund_id TEXT,
    -- Why a pending refund waits (NOT_ENOUGH, rate limits, WeChat unreachable), or why it failed.
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    succeeded_at BIGINT,
    sync_due_at BIGINT,
    sync_attempts BIGINT NOT NULL,
    claimed_until BIGINT,
    UNIQUE (merchant_id, merchant_refund_id),
    UNIQUE (merchant_id, out_refund_no)
);

CREATE INDEX refunds_sync_due ON refunds (sync_due_at);
CREATE INDEX refunds_payment ON refunds (payment_id, created_at);
