//! The fault run's checker: what the gateway's database holds, what the simulator (WeChat)
//! holds and what the webhook receiver accepted, gathered into [`Observed`], then judged by
//! [`judge`] against the promises: every acknowledged payment exists once; a payment is paid
//! in the gateway exactly when WeChat has it paid; refunds never exceed their payment and
//! match WeChat's one for one; every event reached the receiver with a valid signature; the
//! ledger balances.

use std::collections::{HashMap, HashSet};
use wxgate_gateway::pace::Api;

use anyhow::Context;
use wechatpay_v3::client::ClientError;
use wechatpay_v3::error::ErrorCode;
use wechatpay_v3::model::TransferState;
use wxgate_gateway::Gateway;
use wxgate_store::{EventFilter, Store};

use super::receiver::Log;
use super::workload::Books;

/// One acknowledged payment, both sides.
#[derive(Debug, Clone, Default)]
pub struct PaymentFacts {
    pub id: String,
    /// Payments stored under its order id (1 when all is well).
    pub copies: usize,
    pub amount: i64,
    /// The gateway's status (empty when it has none).
    pub status: String,
    /// Whether any of its WeChat orders is paid at the simulator.
    pub wechat_paid: bool,
    /// The gateway's refunds: (out_refund_no, amount, status).
    pub refunds: Vec<(String, i64, String)>,
    /// The simulator's refunds of its orders: (out_refund_no, amount, status).
    pub wechat_refunds: Vec<(String, i64, String)>,
}

/// Everything the checker looks at.
#[derive(Debug, Default)]
pub struct Observed {
    pub payments: Vec<PaymentFacts>,
    /// Refunds the client saw acknowledged that the gateway does not hold.
    pub lost_refunds: Vec<String>,
    /// The merchant's events in the gateway.
    pub events: Vec<String>,
    /// Events the receiver accepted with a valid signature.
    pub received: HashSet<String>,
    pub bad_signatures: u32,
    /// The store's ledger invariants that do not hold.
    pub ledger: Vec<String>,
    /// Payments by status and integration: as `/metrics` reads them (the counts the writes
    /// keep), and counted from the rows.
    pub payment_counts: [Vec<(String, String, i64)>; 2],
    /// Broken promises the client saw on the spot.
    pub client: Vec<String>,
    pub payouts: PayoutFacts,
    /// The reconciliation asked for and its status.
    pub reconciliation: Option<(String, String)>,
}

/// Payouts, both sides: WeChat's operation account pays every transfer it takes and gets back
/// those that fail, so what left it must be what the gateway's live payouts hold.
#[derive(Debug, Default)]
pub struct PayoutFacts {
    /// The gateway's payouts: (id, amount, status).
    pub stored: Vec<(String, i64, String)>,
    /// What WeChat says of each stored payout's transfer, in the gateway's words (`None`: it
    /// has no such transfer).
    pub wechat: Vec<Option<&'static str>>,
    /// Acknowledged payouts the gateway does not hold.
    pub lost: Vec<String>,
    /// What left WeChat's operation account during the run.
    pub wechat_paid_out: i64,
}

impl Observed {
    /// What was checked, in one line.
    pub fn summary(&self) -> String {
        let paid = self.payments.iter().filter(|p| p.wechat_paid).count();
        let payouts = self.payouts.stored.len();
        let paid_out = self
            .payouts
            .stored
            .iter()
            .filter(|p| p.2 == "succeeded")
            .count();
        let refunds: usize = self.payments.iter().map(|p| p.refunds.len()).sum();
        let at_wechat: usize = self.payments.iter().map(|p| p.wechat_refunds.len()).sum();
        format!(
            "checked {} acknowledged payments ({paid} paid at WeChat), {refunds} refunds ({at_wechat} at WeChat), {payouts} payouts ({paid_out} succeeded), {} events ({} received)",
            self.payments.len(),
            self.events.len(),
            self.received.len()
        )
    }
}

/// Every broken promise in `o`, one line each.
pub fn judge(o: &Observed) -> Vec<String> {
    let mut v: Vec<String> = o.client.clone();
    for p in &o.payments {
        judge_payment(p, &mut v);
    }
    v.extend(
        o.lost_refunds
            .iter()
            .map(|r| format!("acknowledged refund {r} is lost")),
    );
    let undelivered = o.events.iter().filter(|e| !o.received.contains(*e));
    v.extend(undelivered.map(|e| format!("event {e} never reached the receiver")));
    if o.bad_signatures > 0 {
        v.push(format!(
            "{} deliveries carried a bad signature",
            o.bad_signatures
        ));
    }
    v.extend(o.ledger.iter().map(|l| format!("ledger: {l}")));
    let [kept, counted] = &o.payment_counts;
    if kept != counted {
        v.push(format!(
            "payments counted {kept:?} for /metrics, {counted:?} in rows"
        ));
    }
    judge_payouts(&o.payouts, &mut v);
    if let Some((id, status)) = &o.reconciliation
        && status != "completed"
    {
        v.push(format!("reconciliation {id} is {status}"));
    }
    v
}

fn judge_payouts(p: &PayoutFacts, v: &mut Vec<String>) {
    v.extend(
        p.lost
            .iter()
            .map(|id| format!("acknowledged payout {id} is lost")),
    );
    let unsettled = p.stored.iter().filter(|s| s.2 == "pending");
    v.extend(unsettled.map(|s| format!("payout {} is still pending", s.0)));
    for ((id, _, status), wechat) in p.stored.iter().zip(&p.wechat) {
        let agrees = match wechat {
            Some(w) => status == w,
            None => matches!(status.as_str(), "failed" | "cancelled"),
        };
        if !agrees {
            v.push(format!(
                "payout {id} is {status} but WeChat has it {}",
                wechat.unwrap_or("not at all")
            ));
        }
    }
    let held: i64 = p
        .stored
        .iter()
        .filter(|s| {
            matches!(
                s.2.as_str(),
                "awaiting_confirmation" | "processing" | "succeeded"
            )
        })
        .map(|s| s.1)
        .sum();
    if held != p.wechat_paid_out {
        v.push(format!(
            "WeChat paid out {} but the gateway's payouts hold {held}",
            p.wechat_paid_out
        ));
    }
}

fn judge_payment(p: &PaymentFacts, v: &mut Vec<String>) {
    if p.copies != 1 {
        v.push(format!(
            "acknowledged payment {} is stored {} times",
            p.id, p.copies
        ));
        return;
    }
    let paid = matches!(
        p.status.as_str(),
        "succeeded" | "paid_after_close" | "refunded"
    );
    if paid != p.wechat_paid || p.status == "pending" && p.wechat_paid {
        v.push(format!(
            "payment {} is {} but WeChat has it {}",
            p.id,
            p.status,
            if p.wechat_paid { "paid" } else { "unpaid" }
        ));
    }
    let taken: i64 = p
        .refunds
        .iter()
        .filter(|r| r.2 != "failed")
        .map(|r| r.1)
        .sum();
    if taken > p.amount {
        v.push(format!("payment {} refunds {taken} of {}", p.id, p.amount));
    }
    let ours: HashMap<&str, (i64, &str)> = p
        .refunds
        .iter()
        .map(|r| (r.0.as_str(), (r.1, r.2.as_str())))
        .collect();
    for (no, amount, status) in &p.wechat_refunds {
        match ours.get(no.as_str()) {
            None => v.push(format!(
                "WeChat refund {no} of payment {} is not the gateway's",
                p.id
            )),
            Some((a, s)) if a != amount || *s != wechat_refund_status(status) => v.push(format!(
                "refund {no}: the gateway has {a} {s}, WeChat {amount} {status}"
            )),
            Some(_) => {}
        }
    }
    let at_wechat: HashSet<&str> = p.wechat_refunds.iter().map(|r| r.0.as_str()).collect();
    for (no, _, status) in &p.refunds {
        if status == "succeeded" && !at_wechat.contains(no.as_str()) {
            v.push(format!(
                "refund {no} succeeded in the gateway but WeChat has none"
            ));
        }
    }
}

/// The gateway's word for a WeChat refund status.
fn wechat_refund_status(status: &str) -> &'static str {
    match status {
        "SUCCESS" => "succeeded",
        "CLOSED" => "failed",
        "ABNORMAL" => "abnormal",
        _ => "pending",
    }
}

/// Gathers [`Observed`] from the database, the simulator and the receiver; `balance_at_start`
/// is WeChat's operation account before the run.
pub async fn gather(
    gw: &Gateway,
    sim: &str,
    merchant: (&str, &str),
    (books, log): (&Books, &Log),
    balance_at_start: i64,
) -> anyhow::Result<Observed> {
    let (merchant_id, mchid) = merchant;
    let store = gw.store();
    let http = reqwest::Client::new();
    let acked = books.payments.lock().expect("payments").clone();
    let mut payments = Vec::with_capacity(acked.len());
    for a in &acked {
        payments.push(payment_facts(store, &http, sim, (merchant_id, mchid), a).await?);
    }
    let mut lost_refunds = Vec::new();
    let refunds = books.refunds.lock().expect("refunds").clone();
    for (id, _) in refunds {
        if store.refund(merchant_id, &id).await?.is_none() {
            lost_refunds.push(id);
        }
    }
    // The events first, then what the receiver has: an event delivered in between counts.
    let events = events(store, merchant_id).await?;
    let ledger = store.ledger_violations().await?;
    let payment_counts = [
        store.ops_snapshot(0).await?.payments,
        store.payment_counts_from_rows().await?,
    ];
    let received = log
        .accepted
        .lock()
        .expect("accepted")
        .keys()
        .cloned()
        .collect();
    let bad_signatures = *log.bad_signatures.lock().expect("bad");
    let wechat_paid_out = balance_at_start - operation_balance(&http, sim, mchid).await?;
    let payouts = payout_facts(gw, merchant_id, books, wechat_paid_out).await?;
    let asked = books.reconciliation.lock().expect("reconciliation").clone();
    let reconciliation = match asked {
        Some(id) => {
            let row = store.reconciliation(merchant_id, &id).await?;
            let status = row.map_or("missing".into(), |r| r.status.as_str().to_string());
            Some((id, status))
        }
        None => None,
    };
    Ok(Observed {
        reconciliation,
        payouts,
        payments,
        lost_refunds,
        events,
        received,
        bad_signatures,
        ledger,
        payment_counts,
        client: books.violations.lock().expect("violations").clone(),
    })
}

async fn payment_facts(
    store: &Store,
    http: &reqwest::Client,
    sim: &str,
    (merchant_id, mchid): (&str, &str),
    a: &super::workload::Acked,
) -> anyhow::Result<PaymentFacts> {
    let mut facts = PaymentFacts {
        id: a.id.clone(),
        amount: a.amount,
        ..Default::default()
    };
    let Some(p) = store.payment_by_order_id(merchant_id, &a.order_id).await? else {
        return Ok(facts);
    };
    facts.copies = usize::from(p.id == a.id);
    facts.status = p.status.as_str().to_string();
    for attempt in store.payment_attempts(&p.id).await? {
        let url = format!("{sim}/sim/orders/{mchid}/{}", attempt.out_trade_no);
        let order: serde_json::Value = http.get(url).send().await?.json().await?;
        let state = order["transaction"]["trade_state"]
            .as_str()
            .unwrap_or_default();
        facts.wechat_paid |= matches!(state, "SUCCESS" | "REFUND");
        for r in order["refunds"].as_array().into_iter().flatten() {
            let no = r["out_refund_no"].as_str().context("out_refund_no")?;
            let status = r["status"].as_str().unwrap_or_default();
            let amount = r["refund"].as_i64().unwrap_or_default();
            facts
                .wechat_refunds
                .push((no.into(), amount, status.into()));
        }
    }
    for r in store.refunds_for_payment(merchant_id, &p.id).await? {
        facts
            .refunds
            .push((r.out_refund_no, r.amount, r.status.as_str().into()));
    }
    Ok(facts)
}

/// A transfer's state in the gateway's words for a payout.
fn payout_word(state: TransferState) -> &'static str {
    match state {
        TransferState::WaitUserConfirm => "awaiting_confirmation",
        TransferState::Success => "succeeded",
        TransferState::Fail => "failed",
        TransferState::Cancelled => "cancelled",
        TransferState::Canceling => "cancelling",
        TransferState::Accepted | TransferState::Processing | TransferState::Transfering => {
            "processing"
        }
    }
}

/// What WeChat says of each payout's transfer.
async fn wechat_transfers(
    gw: &Gateway,
    merchant_id: &str,
    out_bill_nos: &[String],
) -> anyhow::Result<Vec<Option<&'static str>>> {
    let up = gw.upstream(merchant_id).await?;
    let mut states = Vec::with_capacity(out_bill_nos.len());
    for no in out_bill_nos {
        states.push(
            match up.client(Api::Transfer).await.query_transfer(no).await {
                Ok(bill) => Some(payout_word(bill.state)),
                Err(ClientError::Api(e)) if e.code == ErrorCode::NotFound => None,
                Err(e) => return Err(e.into()),
            },
        );
    }
    Ok(states)
}

/// WeChat's operation account for the merchant, at the simulator.
pub async fn operation_balance(
    http: &reqwest::Client,
    sim: &str,
    mchid: &str,
) -> anyhow::Result<i64> {
    let b: serde_json::Value = http
        .get(format!("{sim}/sim/merchants/{mchid}/operation_balance"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    b["operation_balance"].as_i64().context("operation_balance")
}

async fn payout_facts(
    gw: &Gateway,
    merchant_id: &str,
    books: &Books,
    wechat_paid_out: i64,
) -> anyhow::Result<PayoutFacts> {
    let mut facts = PayoutFacts {
        wechat_paid_out,
        ..Default::default()
    };
    let (mut before, mut out_bill_nos) = (None, Vec::new());
    loop {
        let filter = wxgate_store::PayoutFilter::default();
        let page = gw
            .store()
            .list_payouts(merchant_id, &filter, before, 500)
            .await?;
        let Some(last) = page.last() else { break };
        before = Some((last.created_at, last.id.clone()));
        for p in page {
            out_bill_nos.push(p.out_bill_no);
            facts
                .stored
                .push((p.id, p.amount, p.status.as_str().to_string()));
        }
    }
    facts.wechat = wechat_transfers(gw, merchant_id, &out_bill_nos).await?;
    let stored: HashSet<&str> = facts.stored.iter().map(|s| s.0.as_str()).collect();
    let acked = books.payouts.lock().expect("payouts").clone();
    facts.lost = acked
        .into_iter()
        .filter(|id| !stored.contains(id.as_str()))
        .collect();
    Ok(facts)
}

/// Every event of the merchant, newest first.
async fn events(store: &Store, merchant_id: &str) -> anyhow::Result<Vec<String>> {
    let mut all = Vec::new();
    let mut filter = EventFilter {
        limit: 500,
        ..Default::default()
    };
    loop {
        let page = store.list_events(merchant_id, &filter).await?;
        let Some(last) = page.last() else {
            return Ok(all);
        };
        filter.before = Some((last.created_at, last.id.clone()));
        all.extend(page.into_iter().map(|e| e.id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paid(id: &str) -> PaymentFacts {
        PaymentFacts {
            id: id.into(),
            copies: 1,
            amount: 1000,
            status: "succeeded".into(),
            wechat_paid: true,
            refunds: vec![("r1".into(), 300, "succeeded".into())],
            wechat_refunds: vec![("r1".into(), 300, "SUCCESS".into())],
        }
    }

    fn observed(payments: Vec<PaymentFacts>) -> Observed {
        Observed {
            payments,
            events: vec!["evt_1".into()],
            received: HashSet::from(["evt_1".to_string()]),
            ..Default::default()
        }
    }

    #[test]
    fn a_consistent_run_has_no_violations() {
        assert_eq!(judge(&observed(vec![paid("pay_1")])), Vec::<String>::new());
    }

    #[test]
    fn each_broken_promise_is_found() {
        let mut pending = paid("pay_pending");
        pending.status = "pending".into();
        let mut twice = paid("pay_twice");
        twice.copies = 2;
        let mut over = paid("pay_over");
        over.refunds.push(("r2".into(), 800, "pending".into()));
        let mut stray = paid("pay_stray");
        stray
            .wechat_refunds
            .push(("r9".into(), 100, "SUCCESS".into()));
        let mut unpaid_at_wechat = paid("pay_phantom");
        unpaid_at_wechat.wechat_paid = false;
        unpaid_at_wechat.wechat_refunds.clear();
        let mut o = observed(vec![pending, twice, over, stray, unpaid_at_wechat]);
        o.events.push("evt_lost".into());
        o.lost_refunds.push("re_gone".into());
        o.bad_signatures = 1;
        o.ledger.push("posting p1 unbalanced".into());
        o.payouts = PayoutFacts {
            stored: vec![
                ("po_1".into(), 500, "succeeded".into()),
                ("po_2".into(), 300, "pending".into()),
                ("po_3".into(), 0, "awaiting_confirmation".into()),
            ],
            wechat: vec![Some("succeeded"), None, Some("failed")],
            lost: vec!["po_gone".into()],
            // Sent twice: WeChat paid out 500 more than the gateway holds.
            wechat_paid_out: 1000,
        };
        o.reconciliation = Some(("rcn_1".into(), "pending".into()));
        o.payment_counts[0].push(("pending".into(), "native".into(), 1));
        let found = judge(&o);
        for expected in [
            "pay_pending is pending but WeChat has it paid",
            "pay_twice is stored 2 times",
            "pay_over refunds 1100 of 1000",
            "WeChat refund r9",
            "pay_phantom is succeeded but WeChat has it unpaid",
            "event evt_lost never reached",
            "refund re_gone is lost",
            "bad signature",
            "posting p1 unbalanced",
            "payout po_gone is lost",
            "payout po_2 is still pending",
            "payout po_3 is awaiting_confirmation but WeChat has it failed",
            "WeChat paid out 1000 but the gateway's payouts hold 500",
            "reconciliation rcn_1 is pending",
            r#"payments counted [("pending", "native", 1)] for /metrics, [] in rows"#,
        ] {
            assert!(
                found.iter().any(|f| f.contains(expected)),
                "{expected:?} not in {found:#?}"
            );
        }
    }
}
