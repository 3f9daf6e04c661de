//! Rows as stored. Conversions to domain and API types happen in the gateway.

use wxgate_domain::ledger::PostingKind;
use wxgate_domain::payment::AttemptStatus;
use wxgate_domain::payout::PayoutStatus;
use wxgate_domain::reconciliation::{DiscrepancyKind, DiscrepancyStatus, ReconciliationStatus};
use wxgate_domain::refund::RefundStatus;
use wxgate_domain::report::ReportKind;
use wxgate_domain::{
    Integration, MerchantMode, PaidAfterClosePolicy, PaymentIntegration, PaymentStatus,
};

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MerchantRow {
    pub id: String,
    pub name: String,
    /// `sandbox` or `live`.
    #[sqlx(try_from = "String")]
    pub mode: MerchantMode,
    pub mchid: String,
    pub appid: String,
    pub mini_program_appid: Option<String>,
    pub api_base_url: String,
    pub merchant_serial_no: String,
    /// The merchant's private key and APIv3 key, sealed under the master key.
    pub secrets_sealed: String,
    pub platform_public_key_id: Option<String>,
    pub platform_public_key: Option<String>,
    pub platform_certificate: Option<String>,
    /// Comma-separated ISO 4217 codes the merchant may price in.
    pub currencies: String,
    /// `accept` or `refund`.
    #[sqlx(try_from = "String")]
    pub paid_after_close_policy: PaidAfterClosePolicy,
    pub created_at: i64,
    /// Set for a cross-border merchant: its payments and refunds go through WeChat's
    /// `/v3/global/` endpoints with this MCC.
    pub merchant_category_code: Option<String>,
    /// WeChat's fee rate for this merchant, basis points (60 = 0.60 %).
    pub fee_rate_bp: i64,
    /// The default transfer scene of its payouts, as JSON.
    pub payout_scene: Option<String>,
    /// A cross-border merchant's settlement currency (ISO 4217) when WeChat settles it in
    /// another currency than it prices in; `None`: each payment settles in its own.
    pub settlement_currency: Option<String>,
}

impl MerchantRow {
    /// The AppID a Mini Program's payments are made under: its own, or the merchant's.
    pub fn mini_program_appid_or_own(&self) -> &str {
        self.mini_program_appid.as_deref().unwrap_or(&self.appid)
    }
}

/// Decoded by `PaymentRow::decode` (`columns.rs`), from sqlx's rows and the direct readers'.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PaymentRow {
    pub id: String,
    pub merchant_id: String,
    pub merchant_order_id: String,
    pub out_trade_no: String,
    pub amount: i64,
    pub currency: String,
    pub description: String,
    pub integration: PaymentIntegration,
    pub status: PaymentStatus,
    pub version: i64,
    pub fingerprint: String,
    pub payer_openid: Option<String>,
    pub client_ip: Option<String>,
    pub return_url: Option<String>,
    pub cancel_url: Option<String>,
    pub attach: Option<String>,
    pub metadata: String,
    pub wechat_credential: Option<String>,
    pub transaction_id: Option<String>,
    pub paid_at: Option<i64>,
    pub expires_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub sync_due_at: Option<i64>,
    pub sync_attempts: i64,
    pub claimed_until: Option<i64>,
    /// Where this payment's events also go, signed with the merchant's notify secret.
    pub notify_url: Option<String>,
    /// The sum of succeeded refunds.
    pub amount_refunded: i64,
    /// The sum of refunds that have not failed (pending, abnormal, succeeded).
    pub amount_reserved: i64,
    pub refund_count: i64,
    /// The hosted checkout page's token (unguessable) and URL.
    pub checkout_token: Option<String>,
    pub hosted_url: Option<String>,
    /// For a hosted payment: the WeChat product the page chose (`native`, `h5`), once chosen.
    pub checkout_kind: Option<String>,
    /// The payment link this payment was made through.
    pub payment_link_id: Option<String>,
    /// What the payer paid, as WeChat reported it (CNY for a cross-border payment).
    pub payer_amount: Option<i64>,
    pub payer_currency: Option<String>,
    /// The rate WeChat applied: CNY per major unit of `currency`, scaled by 10^8.
    pub exchange_rate: Option<i64>,
    /// The front door it was made through (a [`wxgate_domain::door::Door`] name), if any: its
    /// `notify_url` hears that door's notification.
    pub door: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct HistoryRow {
    #[sqlx(try_from = "String")]
    pub status: PaymentStatus,
    pub source: String,
    pub at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EventRow {
    pub id: String,
    pub merchant_id: String,
    pub event_type: String,
    pub object_id: String,
    pub object_version: i64,
    pub payload: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct QuarantineRow {
    pub id: String,
    pub merchant_id: String,
    pub payment_id: Option<String>,
    pub reason: String,
    pub resource: String,
    pub received_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertOutcome {
    /// It went in, with the detail its insert wrote beside it.
    Inserted(FirstDetail),
    /// The merchant already has a payment with this merchant_order_id.
    Existing(Box<PaymentRow>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransitionOutcome {
    Changed {
        from: PaymentStatus,
        payment: PaymentRow,
    },
    /// The payment already reflected the event.
    Unchanged(PaymentRow),
}

/// What is known when a transition is applied.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TransitionFacts {
    pub now: i64,
    /// `callback`, `sync`, `cancel`, `expiry`, ...
    pub source: String,
    pub transaction_id: Option<String>,
    pub paid_at: Option<i64>,
    /// The WeChat order (attempt) that paid, with `transaction_id`.
    pub out_trade_no: Option<String>,
    /// What the payer paid and the rate applied, when WeChat says.
    pub payer: Option<PayerPaid>,
    /// For a payment ending unpaid: its current order, which the caller closed (or found
    /// closed or missing) at WeChat. The payment ends only while that is still its current
    /// order; if another was started meanwhile (a device switch), the transition answers
    /// `Unchanged` and the caller closes that one too.
    pub closed_order: Option<String>,
}

/// What a payer paid, as WeChat reports it with a successful payment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PayerPaid {
    pub amount: i64,
    pub currency: String,
    /// CNY per major unit of the pricing currency, scaled by 10^8 (cross-border only).
    pub exchange_rate: Option<i64>,
}

/// One WeChat order made for a payment. Decoded by `PaymentAttemptRow::decode` (`columns.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentAttemptRow {
    pub merchant_id: String,
    pub out_trade_no: String,
    pub payment_id: String,
    /// 1 for the first order, then 2, 3, …
    pub seq: i64,
    /// The WeChat product: native, h5, jsapi, mini_program, app.
    pub integration: Integration,
    pub status: AttemptStatus,
    pub wechat_credential: Option<String>,
    pub transaction_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PaymentFilter {
    pub status: Option<PaymentStatus>,
    pub created_gte: Option<i64>,
    pub created_lt: Option<i64>,
    /// Keyset cursor: payments strictly older than this (created_at, id).
    pub before: Option<(i64, String)>,
    pub limit: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyStart {
    /// This request owns the key: do the work, then `finish_idempotent`.
    Started,
    /// The first request's answer, to send again.
    Replay { status: u16, body: String },
    /// Another request with this key is still running.
    InProgress,
    /// The key was used with a different request.
    Mismatch,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct WebhookEndpointRow {
    pub id: String,
    pub merchant_id: String,
    pub url: String,
    /// `*` or a comma-separated list of event types.
    pub events: String,
    pub secret_id: String,
    /// The signing secret, sealed under the master key.
    pub secret_sealed: String,
    pub created_at: i64,
    pub deleted_at: Option<i64>,
}

/// The `endpoint_id` of deliveries to a payment's own notify_url.
pub const NOTIFY_URL_ENDPOINT: &str = "notify_url";

/// A merchant's secret for signing deliveries to payments' own notify URLs.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct NotifySecretRow {
    pub merchant_id: String,
    pub secret_id: String,
    pub secret_sealed: String,
    pub created_at: i64,
}

/// One event on its way to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DeliveryRow {
    pub event_id: String,
    /// A webhook endpoint's id, or [`NOTIFY_URL_ENDPOINT`].
    pub endpoint_id: String,
    pub merchant_id: String,
    /// The target of a [`NOTIFY_URL_ENDPOINT`] delivery.
    pub url: Option<String>,
    /// `pending`, `delivered`, `dead` or `cancelled`.
    pub status: String,
    pub attempts: i64,
    pub round_attempts: i64,
    pub next_attempt_at: Option<i64>,
    /// While claimed: the lease's end, which also identifies the claim.
    pub claimed_until: Option<i64>,
    pub last_attempt_at: Option<i64>,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AttemptRow {
    pub event_id: String,
    pub endpoint_id: String,
    pub attempt: i64,
    pub at: i64,
    pub status_code: Option<i64>,
    pub latency_ms: i64,
    pub error: Option<String>,
}

/// What one delivery attempt led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered,
    /// Failed; try again at this time.
    Retry {
        next_at: i64,
    },
    /// Failed, and the schedule is spent: dead-lettered.
    Dead,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventFilter {
    pub event_type: Option<String>,
    pub object_id: Option<String>,
    /// Only events with a delivery in this status (`dead`, `pending`, ...).
    pub delivery_status: Option<String>,
    /// Keyset cursor: events strictly older than this (created_at, id).
    pub before: Option<(i64, String)>,
    pub limit: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RefundRow {
    pub id: String,
    pub merchant_id: String,
    pub payment_id: String,
    pub merchant_refund_id: String,
    pub out_refund_no: String,
    pub amount: i64,
    pub currency: String,
    pub reason: Option<String>,
    #[sqlx(try_from = "String")]
    pub status: RefundStatus,
    pub version: i64,
    pub fingerprint: String,
    /// 1 once WeChat has accepted the request.
    #[sqlx(try_from = "i64")]
    pub submitted: Flag,
    pub wechat_refund_id: Option<String>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub succeeded_at: Option<i64>,
    pub sync_due_at: Option<i64>,
    pub sync_attempts: i64,
    pub claimed_until: Option<i64>,
    /// Set for the refund of an attempt that was paid twice: that order is refunded, outside
    /// the payment's own sums.
    pub attempt_out_trade_no: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveOutcome {
    /// The amount is reserved and the refund written.
    Reserved(Box<RefundRow>),
    /// The merchant already has a refund with this merchant_refund_id.
    Existing(Box<RefundRow>),
    /// The payment's state refuses it (the rules say why); the payment as it is now.
    Refused(Box<PaymentRow>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundTransitionOutcome {
    Changed {
        refund: Box<RefundRow>,
        payment: Box<PaymentRow>,
    },
    Unchanged(Box<RefundRow>),
}

/// What is known when a refund transition is applied.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RefundFacts {
    pub now: i64,
    pub wechat_refund_id: Option<String>,
    pub succeeded_at: Option<i64>,
    pub last_error: Option<String>,
}

/// What one try at a pending refund learned, without changing its status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RefundNote<'a> {
    /// WeChat has accepted the request.
    pub submitted: bool,
    pub wechat_refund_id: Option<&'a str>,
    /// Why it waits; `None` clears the previous reason.
    pub last_error: Option<&'a str>,
    /// When to look again; `None`: not until someone looks.
    pub next_due: Option<i64>,
    pub attempts: i64,
    pub now: i64,
}

/// Which events to send again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redeliver {
    Event(String),
    /// Events created in `[created_gte, created_lt)`, optionally only those with a delivery
    /// in this status (`dead`, ...).
    Range {
        created_gte: i64,
        created_lt: i64,
        delivery_status: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PaymentLinkRow {
    pub id: String,
    pub merchant_id: String,
    pub token: String,
    pub url: String,
    pub currency: String,
    pub amount: Option<i64>,
    pub amount_min: Option<i64>,
    pub amount_max: Option<i64>,
    pub description: String,
    pub return_url: Option<String>,
    pub max_uses: Option<i64>,
    pub uses: i64,
    pub expires_at: Option<i64>,
    /// 1 while it takes payments.
    #[sqlx(try_from = "i64")]
    pub active: Flag,
    pub created_at: i64,
    /// The merchant's own reference of the link, unique per merchant, if it gave one.
    pub merchant_reference: Option<String>,
}

/// What starting an attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptStart {
    Started(Box<PaymentAttemptRow>),
    /// The payment is no longer pending (or not there).
    NotPending,
    /// The payment made as many orders as it may.
    TooMany,
}

/// A yes or no, stored as 0 or 1 (the portable schema has no boolean type); decoded here so no
/// code above the store compares it with a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flag(bool);

impl Flag {
    pub const YES: Flag = Flag(true);
    pub const NO: Flag = Flag(false);

    pub fn is_set(self) -> bool {
        self.0
    }

    /// The stored form.
    pub fn stored(self) -> i64 {
        i64::from(self.0)
    }
}

impl From<bool> for Flag {
    fn from(value: bool) -> Self {
        Flag(value)
    }
}

impl TryFrom<i64> for Flag {
    type Error = String;

    fn try_from(value: i64) -> Result<Self, Self::Error> {
        match value {
            0 => Ok(Flag(false)),
            1 => Ok(Flag(true)),
            other => Err(format!("{other} is not a stored flag (0 or 1)")),
        }
    }
}

/// An API key as listed: its id and times, never the key or its hash.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ApiKeyRow {
    pub id: String,
    pub merchant_id: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// What a posting is about, besides its kind and amount.
#[derive(Debug, Clone)]
pub struct PostingSource<'a> {
    pub merchant_id: &'a str,
    pub currency: &'a str,
    /// The cause, unique per merchant and kind.
    pub source_id: &'a str,
    pub payment_id: Option<&'a str>,
    pub refund_id: Option<&'a str>,
    pub now: i64,
}

/// A posting as stored, with its entries.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PostingRow {
    pub id: String,
    pub merchant_id: String,
    pub currency: String,
    #[sqlx(try_from = "String")]
    pub kind: PostingKind,
    pub source_id: String,
    pub amount: i64,
    pub payment_id: Option<String>,
    pub refund_id: Option<String>,
    pub created_at: i64,
}

/// One page of postings, newest first.
#[derive(Debug, Clone, Default)]
pub struct PostingFilter {
    pub kind: Option<PostingKind>,
    pub payment_id: Option<String>,
    /// Only those before this (created_at, id).
    pub before: Option<(i64, String)>,
    pub limit: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ReconciliationRow {
    pub id: String,
    pub merchant_id: String,
    /// YYYY-MM-DD, Asia/Shanghai.
    pub bill_date: String,
    #[sqlx(try_from = "String")]
    pub status: ReconciliationStatus,
    pub version: i64,
    pub attempts: i64,
    pub next_attempt_at: Option<i64>,
    pub claimed_until: Option<i64>,
    pub last_error: Option<String>,
    /// Counts and sums of both sides, JSON.
    pub totals: Option<String>,
    pub discrepancy_count: i64,
    pub repaired_count: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub completed_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DiscrepancyRow {
    pub id: String,
    pub reconciliation_id: String,
    pub merchant_id: String,
    #[sqlx(try_from = "String")]
    pub kind: DiscrepancyKind,
    pub reference: String,
    pub payment_id: Option<String>,
    pub refund_id: Option<String>,
    pub payout_id: Option<String>,
    pub gateway_side: Option<String>,
    pub wechat_side: Option<String>,
    #[sqlx(try_from = "String")]
    pub status: DiscrepancyStatus,
    pub resolution: Option<String>,
    pub created_at: i64,
    pub resolved_at: Option<i64>,
}

/// A WeChat order of the gateway's, as reconciliation reads it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DayOrderRow {
    pub out_trade_no: String,
    pub payment_id: String,
    pub amount: i64,
    /// The attempt's status: open, succeeded, closed or duplicate.
    #[sqlx(try_from = "String")]
    pub attempt_status: AttemptStatus,
    pub paid_at: Option<i64>,
}

/// A refund of the gateway's, as reconciliation reads it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DayRefundRow {
    pub out_refund_no: String,
    pub id: String,
    pub payment_id: String,
    pub amount: i64,
    #[sqlx(try_from = "String")]
    pub status: wxgate_domain::refund::RefundStatus,
    /// When WeChat took it (none: never yet).
    pub submitted_at: Option<i64>,
}

/// What a finished reconciliation writes in one go.
#[derive(Debug, Clone)]
pub struct Completion {
    pub totals: String,
    pub discrepancies: Vec<DiscrepancyRow>,
    /// `reconciliation.discrepancy_found` (one per discrepancy) and `reconciliation.completed`;
    /// their object versions are set here.
    pub events: Vec<EventRow>,
    pub now: i64,
}

#[derive(Debug, Clone, Default)]
pub struct ReconciliationFilter {
    pub status: Option<ReconciliationStatus>,
    pub date_gte: Option<String>,
    pub date_lte: Option<String>,
    /// Only those before this (bill_date, id).
    pub before: Option<(String, String)>,
    pub limit: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ReportRow {
    pub id: String,
    pub merchant_id: String,
    #[sqlx(try_from = "String")]
    pub kind: ReportKind,
    pub date_from: String,
    pub date_to: String,
    /// SHA-256 of the download link's token.
    pub token_hash: String,
    pub expires_at: i64,
    pub created_at: i64,
}

/// One page of a report's rows: those of [from, to) (Unix ms) after `after` (created_at, id),
/// oldest first.
#[derive(Debug, Clone)]
pub struct ReportPage {
    pub from: i64,
    pub to: i64,
    pub after: Option<(i64, String)>,
    pub limit: i64,
}

/// A payout as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PayoutRow {
    pub id: String,
    pub merchant_id: String,
    /// Sent to WeChat, fixed at creation.
    pub out_bill_no: String,
    pub mchid: String,
    pub amount: i64,
    pub currency: String,
    pub appid: String,
    pub openid: String,
    pub remark: String,
    /// The payee's name, sealed with the master key.
    pub user_name_sealed: Option<String>,
    /// The scene and its report items, as JSON.
    pub scene: String,
    pub notify_url: Option<String>,
    pub metadata: String,
    #[sqlx(try_from = "String")]
    pub status: PayoutStatus,
    pub version: i64,
    /// Set while WeChat may hold the transfer: it is queried before anything is sent again.
    #[sqlx(try_from = "i64")]
    pub maybe_at_wechat: Flag,
    pub transfer_bill_no: Option<String>,
    pub package_info: Option<String>,
    pub failure_code: Option<String>,
    pub last_error: Option<String>,
    /// The hosted confirmation page's token.
    pub confirmation_token: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
    pub sync_due_at: Option<i64>,
    pub sync_attempts: i64,
    pub claimed_until: Option<i64>,
    /// The merchant's own id of the payout, unique per merchant, if it gave one.
    pub merchant_payout_id: Option<String>,
    /// The front door it was made through, if any (its notify_url hears that door's format).
    pub door: Option<String>,
    /// The Idempotency-Key it was made under, if any: a retry that runs again finds it.
    pub idempotency_key: Option<String>,
}

/// What WeChat said about a payout, applied with its new status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PayoutFacts {
    pub now: i64,
    pub transfer_bill_no: Option<String>,
    pub package_info: Option<String>,
    pub failure_code: Option<String>,
    pub last_error: Option<String>,
}

/// What happened to a payout's request without a change of status.
#[derive(Debug, Clone, Copy)]
pub struct PayoutNote<'a> {
    /// Whether WeChat may now hold the transfer.
    pub maybe_at_wechat: bool,
    pub transfer_bill_no: Option<&'a str>,
    pub last_error: Option<&'a str>,
    pub next_due: Option<i64>,
    pub attempts: i64,
    pub now: i64,
}

/// Filters of a merchant's payout list.
#[derive(Debug, Clone, Default)]
pub struct PayoutFilter {
    pub status: Option<PayoutStatus>,
    pub created_gte: Option<i64>,
    pub created_lt: Option<i64>,
}

/// A front door's credential for a merchant.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DoorCredentialRow {
    pub door: String,
    /// What the merchant presents: a uid, a merchant code, an API key id.
    pub key_id: String,
    pub merchant_id: String,
    /// The secret, sealed with the master key.
    pub secret_sealed: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// What operators watch, counted from the database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpsSnapshot {
    /// (status, integration, count).
    pub payments: Vec<(String, String, i64)>,
    pub deliveries_pending: i64,
    /// How long the oldest pending delivery has waited.
    pub oldest_delivery_ms: i64,
    /// Pending payments whose sync is due.
    pub sync_due: i64,
    pub pools: Vec<PoolUse>,
}

/// One connection pool's use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolUse {
    /// `reads`, `writer` (SQLite) or `shared` (PostgreSQL).
    pub name: &'static str,
    /// Connections open, idle among them, and the most the pool opens.
    pub open: u32,
    pub idle: u32,
    pub max: u32,
}

/// What a new payment's detail holds once `insert_payment` has written it: its first history
/// row and, when it knows its product, its first WeChat order (a hosted payment gets one when
/// its page first opens). The insert writes exactly these and answers with them, so a create
/// can answer from them without reading them back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstDetail {
    pub history: Vec<HistoryRow>,
    pub attempts: Vec<PaymentAttemptRow>,
}

pub(crate) fn first_detail(p: &PaymentRow) -> FirstDetail {
    let history = HistoryRow {
        status: p.status,
        source: "created".to_string(),
        at: p.created_at,
    };
    let attempt = p
        .integration
        .product()
        .map(|integration| PaymentAttemptRow {
            merchant_id: p.merchant_id.clone(),
            out_trade_no: p.out_trade_no.clone(),
            payment_id: p.id.clone(),
            seq: 1,
            integration,
            status: AttemptStatus::Open,
            wechat_credential: None,
            transaction_id: None,
            created_at: p.created_at,
            updated_at: p.created_at,
        });
    FirstDetail {
        history: vec![history],
        attempts: attempt.into_iter().collect(),
    }
}
