-- Reports: a date range of payments, refunds, balance transactions or reconciliation
-- discrepancies, downloaded as CSV through a link that expires. The file is produced while it
-- is downloaded, page by page; only the link's token hash is kept.
CREATE TABLE reports (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    kind TEXT NOT NULL,
    date_from TEXT NOT NULL,
    date_to TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX refunds_merchant_created ON refunds (merchant_id, created_at);
