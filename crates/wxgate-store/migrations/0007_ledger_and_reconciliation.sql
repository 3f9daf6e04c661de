-- Money after the payment: the double-entry ledger, daily reconciliations against WeChat's
-- bills, and the discrepancies they find.

-- WeChat's fee rate for the merchant, in basis points (60 = 0.60 %): what reconciliation
-- expects each payment's fee to be.
ALTER TABLE merchants ADD COLUMN fee_rate_bp BIGINT NOT NULL DEFAULT 60;

-- One balanced movement. A cause posts once: (merchant, kind, source) is unique.
CREATE TABLE ledger_postings (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    currency TEXT NOT NULL,
    kind TEXT NOT NULL,
    -- The out_trade_no, refund id or fund-flow movement that caused it.
    source_id TEXT NOT NULL,
    amount BIGINT NOT NULL,
    -- The payment (and refund) it is about, when there is one.
    payment_id TEXT,
    refund_id TEXT,
    created_at BIGINT NOT NULL,
    UNIQUE (merchant_id, kind, source_id)
);
CREATE INDEX ledger_postings_merchant_created ON ledger_postings (merchant_id, created_at);

-- Each posting's entries; they sum to zero per posting. Balances are sums of these.
CREATE TABLE ledger_entries (
    posting_id TEXT NOT NULL REFERENCES ledger_postings (id),
    merchant_id TEXT NOT NULL,
    currency TEXT NOT NULL,
    account TEXT NOT NULL,
    amount BIGINT NOT NULL,
    PRIMARY KEY (posting_id, account)
);
CREATE INDEX ledger_entries_account ON ledger_entries (merchant_id, currency, account);

CREATE TABLE reconciliations (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    -- The bill day, YYYY-MM-DD in Asia/Shanghai.
    bill_date TEXT NOT NULL,
    -- pending | waiting_for_bill | completed | failed
    status TEXT NOT NULL,
    version BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_at BIGINT,
    claimed_until BIGINT,
    last_error TEXT,
    -- The counts and sums of both sides, as JSON, once completed.
    totals TEXT,
    discrepancy_count BIGINT NOT NULL,
    repaired_count BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    completed_at BIGINT,
    UNIQUE (merchant_id, bill_date)
);
CREATE INDEX reconciliations_due ON reconciliations (next_attempt_at);

CREATE TABLE discrepancies (
    id TEXT PRIMARY KEY,
    reconciliation_id TEXT NOT NULL REFERENCES reconciliations (id),
    merchant_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    -- The out_trade_no or out_refund_no.
    reference TEXT NOT NULL,
    payment_id TEXT,
    refund_id TEXT,
    -- What each side holds, as JSON.
    gateway_side TEXT,
    wechat_side TEXT,
    -- open | repaired | resolved
    status TEXT NOT NULL,
    resolution TEXT,
    created_at BIGINT NOT NULL,
    resolved_at BIGINT
);
CREATE INDEX discrepancies_reconciliation ON discrepancies (reconciliation_id, created_at);

-- The ledger of what happened before it existed: every paid WeChat order and every succeeded
-- refund, posted as they would have been.
INSERT INTO ledger_postings (id, merchant_id, currency, kind, source_id, amount, payment_id,
    refund_id, created_at)
SELECT 'txn_' || a.merchant_id || '_' || a.out_trade_no, a.merchant_id, p.currency, 'payment',
    a.out_trade_no, p.amount, p.id, NULL, COALESCE(p.paid_at, a.updated_at)
FROM payment_attempts a JOIN payments p ON p.id = a.payment_id
WHERE a.status IN ('succeeded', 'duplicate');

INSERT INTO ledger_postings (id, merchant_id, currency, kind, source_id, amount, payment_id,
    refund_id, created_at)
SELECT 'txn_' || id, merchant_id, currency, 'refund', id, amount, payment_id, id,
    COALESCE(succeeded_at, updated_at)
FROM refunds WHERE status = 'succeeded';

INSERT INTO ledger_entries (posting_id, merchant_id, currency, account, amount)
SELECT id, merchant_id, currency, 'pending', amount FROM ledger_postings WHERE kind = 'payment';
INSERT INTO ledger_entries (posting_id, merchant_id, currency, account, amount)
SELECT id, merchant_id, currency, 'revenue', -amount FROM ledger_postings WHERE kind = 'payment';
INSERT INTO ledger_entries (posting_id, merchant_id, currency, account, amount)
SELECT id, merchant_id, currency, 'refunds', amount FROM ledger_postings WHERE kind = 'refund';
INSERT INTO ledger_entries (posting_id, merchant_id, currency, account, amount)
SELECT id, merchant_id, currency, 'settled', -amount FROM ledger_postings WHERE kind = 'refund';
