//! The fault run's checker: what the gateway's database holds, what the simulator (WeChat)
//! holds and what the webhook receiver accepted, gathered into [`Observed`], then judged by
//! [`judge`] against the promises: every acknowledged payment exists once; a payment is paid
//! in the gateway exactly when WeChat has it paid; refunds never exceed their payment and
//! match WeChat's one for one; every event reached the receiver with a valid signature; the
//! ledger balances.

use std::collections::{HashMap, HashSet};

use anyhow::Context;
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
    /// Broken promises the client saw on the spot.
    pub client: Vec<String>,
}

impl Observed {
    /// What was checked, in one line.
    pub fn summary(&self) -> String {
        let paid = self.payments.iter().filter(|p| p.wechat_paid).count();
        let refunds: usize = self.payments.iter().map(|p| p.refunds.len()).sum();
        let at_wechat: usize = self.payments.iter().map(|p| p.wechat_refunds.len()).sum();
        format!(
            "checked {} acknowledged payments ({paid} paid at WeChat), {refunds} refunds ({at_wechat} at WeChat), {} events ({} received)",
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
    v
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

/// Gathers [`Observed`] from the database, the simulator and the receiver.
pub async fn gather(
    store: &Store,
    sim: &str,
    merchant: (&str, &str),
    books: &Books,
    log: &Log,
) -> anyhow::Result<Observed> {
    let (merchant_id, mchid) = merchant;
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
    let received = log
        .accepted
        .lock()
        .expect("accepted")
        .keys()
        .cloned()
        .collect();
    let bad_signatures = *log.bad_signatures.lock().expect("bad");
    Ok(Observed {
        payments,
        lost_refunds,
        events,
        received,
        bad_signatures,
        ledger,
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
        ] {
            assert!(
                found.iter().any(|f| f.contains(expected)),
                "{expected:?} not in {found:#?}"
            );
        }
    }
}
