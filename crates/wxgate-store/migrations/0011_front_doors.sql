-- Front doors: other systems' APIs served over the same payments. Each door has its own
-- credentials per merchant, and a payment made through a door notifies in that door's format.

-- A door's credential: the id the merchant presents (a uid, a merchant code, an API key id)
-- and its secret, sealed with the master key (doors sign with it, so it must be readable).
CREATE TABLE door_credentials (
    door TEXT NOT NULL,
    key_id TEXT NOT NULL,
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    secret_sealed TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT,
    PRIMARY KEY (door, key_id)
);
CREATE INDEX door_credentials_merchant ON door_credentials (merchant_id, door);

-- Access tokens and sessions a door issues, stored as SHA-256 hashes.
CREATE TABLE door_tokens (
    token_hash TEXT PRIMARY KEY,
    door TEXT NOT NULL,
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX door_tokens_expiry ON door_tokens (expires_at);

-- The merchant's own reference of a payment link (a front door's static payment code is a
-- link, named by the merchant's order id).
ALTER TABLE payment_links ADD COLUMN merchant_reference TEXT;
CREATE UNIQUE INDEX payment_links_reference ON payment_links (merchant_id, merchant_reference);

-- The door a payment was made through: its notify_url hears that door's notification.
ALTER TABLE payments ADD COLUMN door TEXT;
