-- Payment links: a permanent URL (and QR) whose every visit makes a new hosted payment.
CREATE TABLE payment_links (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    token TEXT NOT NULL UNIQUE,
    url TEXT NOT NULL,
    currency TEXT NOT NULL,
    -- A fixed amount, or bounds for the amount the payer enters.
    amount BIGINT,
    amount_min BIGINT,
    amount_max BIGINT,
    description TEXT NOT NULL,
    return_url TEXT,
    max_uses BIGINT,
    uses BIGINT NOT NULL,
    expires_at BIGINT,
    active BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE INDEX payment_links_merchant ON payment_links (merchant_id, created_at);

ALTER TABLE payments ADD COLUMN payment_link_id TEXT;
CREATE INDEX payments_payment_link ON payments (payment_link_id);
