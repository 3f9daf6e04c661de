-- Portable SQL: the same schema on SQLite and PostgreSQL. Times are Unix milliseconds
-- (BIGINT), amounts are integers in the currency's minor unit, JSON is stored as TEXT.

CREATE TABLE merchants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    mode TEXT NOT NULL,
    mchid TEXT NOT NULL,
    appid TEXT NOT NULL,
    mini_program_appid TEXT,
    api_base_url TEXT NOT NULL,
    merchant_serial_no TEXT NOT NULL,
    secrets_sealed TEXT NOT NULL,
    platform_public_key_id TEXT,
    platform_public_key TEXT,
    platform_certificate TEXT,
    currencies TEXT NOT NULL,
    paid_after_close_policy TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    key_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE TABLE payments (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    merchant_order_id TEXT NOT NULL,
    out_trade_no TEXT NOT NULL,
    amount BIGINT NOT NULL,
    currency TEXT NOT NULL,
    description TEXT NOT NULL,
    integration TEXT NOT NULL,
    status TEXT NOT NULL,
    version BIGINT NOT NULL,
    fingerprint TEXT NOT NULL,
    payer_openid TEXT,
    client_ip TEXT,
    return_url TEXT,
    cancel_url TEXT,
    attach TEXT,
    metadata TEXT NOT NULL,
    wechat_credential TEXT,
    transaction_id TEXT,
    paid_at BIGINT,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    sync_due_at BIGINT,
    sync_attempts BIGINT NOT NULL,
    claimed_until BIGINT,
    UNIQUE (merchant_id, merchant_order_id),
    UNIQUE (merchant_id, out_trade_no)
);

CREATE INDEX payments_sync_due ON payments (sync_due_at);
CREATE INDEX payments_merchant_created ON payments (merchant_id, created_at);

CREATE TABLE payment_status_history (
    payment_id TEXT NOT NULL REFERENCES payments (id),
    version BIGINT NOT NULL,
    status TEXT NOT NULL,
    source TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (payment_id, version)
);

-- The transactional outbox: every state change writes its event in the same transaction.
CREATE TABLE events (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    event_type TEXT NOT NULL,
    object_id TEXT NOT NULL,
    object_version BIGINT NOT NULL,
    payload TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (object_id, object_version)
);

CREATE INDEX events_merchant_created ON events (merchant_id, created_at);

CREATE TABLE idempotency_keys (
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status_code BIGINT,
    response_body TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, idempotency_key)
);

-- Callbacks whose signature verified but whose content did not match the payment.
CREATE TABLE quarantined_callbacks (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL,
    payment_id TEXT,
    reason TEXT NOT NULL,
    resource TEXT NOT NULL,
    received_at BIGINT NOT NULL
);
