-- Merchant webhooks. Deliveries are written in the same transaction as their event, one per
-- subscribed endpoint, and claimed by workers with a lease like the status sync.

CREATE TABLE webhook_endpoints (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    url TEXT NOT NULL,
    -- '*' or a comma-separated list of event types.
    events TEXT NOT NULL,
    secret_id TEXT NOT NULL,
    -- The signing secret, sealed under the master key (it must be read back to sign).
    secret_sealed TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    deleted_at BIGINT
);

CREATE INDEX webhook_endpoints_merchant ON webhook_endpoints (merchant_id);

-- A payment may name its own notify_url: its events (and its refunds') go there too, signed with
-- the merchant's notify secret.
ALTER TABLE payments ADD COLUMN notify_url TEXT;

CREATE TABLE notify_secrets (
    merchant_id TEXT PRIMARY KEY REFERENCES merchants (id),
    secret_id TEXT NOT NULL,
    secret_sealed TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE webhook_deliveries (
    event_id TEXT NOT NULL REFERENCES events (id),
    -- A webhook endpoint's id, or 'notify_url' for the payment's own notify_url.
    endpoint_id TEXT NOT NULL,
    merchant_id TEXT NOT NULL,
    -- Where to, for 'notify_url' deliveries.
    url TEXT,
    -- pending | delivered | dead | cancelled
    status TEXT NOT NULL,
    -- Every attempt ever made (numbers the attempt log).
    attempts BIGINT NOT NULL,
    -- Attempts since this round started (indexes the retry schedule; a redelivery resets it).
    round_attempts BIGINT NOT NULL,
    -- Set only while pending.
    next_attempt_at BIGINT,
    claimed_until BIGINT,
    last_attempt_at BIGINT,
    last_status_code BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    delivered_at BIGINT,
    PRIMARY KEY (event_id, endpoint_id)
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at);

CREATE TABLE webhook_attempts (
    event_id TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    at BIGINT NOT NULL,
    status_code BIGINT,
    latency_ms BIGINT NOT NULL,
    error TEXT,
    PRIMARY KEY (event_id, endpoint_id, attempt)
);
