-- Payment attempts: every WeChat order made for a payment, each with its own out_trade_no and
-- product. The payment's own out_trade_no and wechat_credential are its current attempt's (the
-- latest while it is pending, the one that paid once it succeeded).
CREATE TABLE payment_attempts (
    merchant_id TEXT NOT NULL,
    out_trade_no TEXT NOT NULL,
    payment_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    integration TEXT NOT NULL,
    -- open | succeeded | closed | duplicate (paid after another attempt already paid: refunded)
    status TEXT NOT NULL,
    wechat_credential TEXT,
    transaction_id TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, out_trade_no)
);
CREATE UNIQUE INDEX payment_attempts_seq ON payment_attempts (payment_id, seq);

-- The WeChat orders payments already have become their first attempts.
INSERT INTO payment_attempts (merchant_id, out_trade_no, payment_id, seq, integration, status,
    wechat_credential, transaction_id, created_at, updated_at)
SELECT merchant_id, out_trade_no, id, 1, COALESCE(checkout_kind, integration),
    CASE WHEN transaction_id IS NOT NULL THEN 'succeeded'
         WHEN status = 'pending' THEN 'open' ELSE 'closed' END,
    wechat_credential, transaction_id, created_at, updated_at
FROM payments WHERE integration <> 'hosted' OR checkout_kind IS NOT NULL;

-- A refund of an attempt paid twice (its own WeChat order, outside the payment's sums).
ALTER TABLE refunds ADD COLUMN attempt_out_trade_no TEXT;
