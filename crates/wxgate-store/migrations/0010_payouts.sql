-- Payouts: transfers to a WeChat user's balance (WeChat's merchant transfers), which the payee
-- confirms inside WeChat.

-- The merchant's default transfer scene, as JSON {"id", "report_infos": [{"info_type",
-- "info_content"}]}: a payout that names no scene uses it.
ALTER TABLE merchants ADD COLUMN payout_scene TEXT;

CREATE TABLE payouts (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    -- Sent to WeChat, fixed at creation: every retry and query uses it.
    out_bill_no TEXT NOT NULL,
    -- The merchant's mchid and the AppID the payee's openid belongs to, as sent.
    mchid TEXT NOT NULL,
    amount BIGINT NOT NULL,
    currency TEXT NOT NULL,
    appid TEXT NOT NULL,
    openid TEXT NOT NULL,
    remark TEXT NOT NULL,
    -- The payee's real name, sealed with the master key; encrypted to WeChat's key when sent.
    user_name_sealed TEXT,
    -- The transfer scene and its report items, as JSON.
    scene TEXT NOT NULL,
    notify_url TEXT,
    metadata TEXT NOT NULL,
    status TEXT NOT NULL,
    version BIGINT NOT NULL,
    -- 1 while WeChat may hold the transfer (sent, or about to be, with no definite refusal):
    -- then it is queried before anything is sent again, and never cancelled unasked.
    maybe_at_wechat BIGINT NOT NULL,
    transfer_bill_no TEXT,
    -- For the payee's confirmation, while it awaits one.
    package_info TEXT,
    -- Why it failed (WeChat's fail_reason or refusal), or why a pending one waits.
    failure_code TEXT,
    last_error TEXT,
    -- The hosted confirmation page's token (its URL is the payout's to share, like a checkout's).
    confirmation_token TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    finished_at BIGINT,
    sync_due_at BIGINT,
    sync_attempts BIGINT NOT NULL,
    claimed_until BIGINT,
    UNIQUE (merchant_id, out_bill_no)
);

-- A discrepancy about a payout (the operation account's fund-flow bill against the payouts).
ALTER TABLE discrepancies ADD COLUMN payout_id TEXT;

-- The merchant's own id of a payout, unique per merchant: posting it again answers the same
-- payout.
ALTER TABLE payouts ADD COLUMN merchant_payout_id TEXT;
CREATE UNIQUE INDEX payouts_merchant_payout_id ON payouts (merchant_id, merchant_payout_id);

-- The front door a payout was made through: its notify_url hears that door's notification.
ALTER TABLE payouts ADD COLUMN door TEXT;

CREATE INDEX payouts_merchant_created ON payouts (merchant_id, created_at);
CREATE INDEX payouts_sync_due ON payouts (sync_due_at);
CREATE UNIQUE INDEX payouts_confirmation ON payouts (confirmation_token);
