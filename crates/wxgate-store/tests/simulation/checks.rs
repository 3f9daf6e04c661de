//! The invariants, checked after every step for the payment it touched, over the whole ledger
//! now and then, and over everything once the run has drained.

use std::collections::BTreeSet;

use wxgate_domain::payment::{AttemptStatus, is_attempt_of};

use super::*;

/// Rounds of draining before a run is said not to settle.
const DRAIN_ROUNDS: usize = 200;
/// Each drain round moves the clock past every lease and retry.
const DRAIN_TICK_MS: i64 = 120_000;
/// Past every payment's expiry (two hours).
const PAST_EXPIRY_MS: i64 = 3 * 3_600_000;

/// A payment and its refunds, as read for a check.
pub(super) type Loaded = (PaymentRow, Vec<RefundRow>);

fn ensure(ok: bool, what: impl FnOnce() -> String) -> Verdict {
    if ok { Ok(()) } else { Err(what()) }
}

impl Simulation {
    /// A payment's sums against its refunds, its status against WeChat's order, and its
    /// refunds against WeChat's. Returns what it read (none when the payment has no row).
    pub(super) async fn check_payment(&mut self, id: &str) -> Result<Option<Loaded>, String> {
        let Some(p) = self.store.payment(MERCHANT, id).await.map_err(err)? else {
            // Only a create that never reached its insert leaves no row; the client was
            // never told of it.
            let told = self.known.iter().any(|(k, _)| k == id);
            ensure(!told, || format!("acknowledged payment {id} is missing"))?;
            return Ok(None);
        };
        let refunds = self.store.refunds_for_payment(MERCHANT, id).await;
        let refunds = refunds.map_err(err)?;
        self.check_sums(&p, &refunds)?;
        self.check_against_wechat(&p, &refunds)?;
        Ok(Some((p, refunds)))
    }

    fn check_sums(&self, p: &PaymentRow, refunds: &[RefundRow]) -> Verdict {
        let own = || refunds.iter().filter(|r| r.attempt_out_trade_no.is_none());
        let held: i64 = own()
            .filter(|r| r.status != RefundStatus::Failed)
            .map(|r| r.amount)
            .sum();
        let done: i64 = own()
            .filter(|r| r.status == RefundStatus::Succeeded)
            .map(|r| r.amount)
            .sum();
        ensure(
            p.amount_reserved == held && p.amount_refunded == done,
            || {
                format!(
                    "{}: reserved {} refunded {}, its refunds hold {held} and returned {done}",
                    p.id, p.amount_reserved, p.amount_refunded
                )
            },
        )?;
        // Per WeChat order, the refunds not failed never exceed what it was paid.
        let mut per_order: BTreeMap<String, i64> = BTreeMap::new();
        for r in refunds.iter().filter(|r| r.status != RefundStatus::Failed) {
            let order = r
                .attempt_out_trade_no
                .clone()
                .unwrap_or(p.out_trade_no.clone());
            *per_order.entry(order).or_default() += r.amount;
        }
        for (order, sum) in per_order {
            let paid = self
                .wechat
                .orders
                .get(&order)
                .is_some_and(|o| o.paid.is_some());
            ensure(sum <= p.amount && paid, || {
                format!(
                    "{}: refunds of order {order} hold {sum} of {} (paid: {paid})",
                    p.id, p.amount
                )
            })?;
        }
        Ok(())
    }

    fn check_against_wechat(&self, p: &PaymentRow, refunds: &[RefundRow]) -> Verdict {
        let of_p = |no: &str| is_attempt_of(&p.id, no);
        let paid = self
            .wechat
            .orders
            .get(&p.out_trade_no)
            .and_then(|o| o.paid.clone());
        let any_paid = self
            .wechat
            .orders
            .iter()
            .any(|(no, o)| of_p(no) && o.paid.is_some());
        let agrees = match p.status {
            PaymentStatus::Succeeded | PaymentStatus::Refunded | PaymentStatus::PaidAfterClose => {
                paid.is_some() && paid == p.transaction_id
            }
            PaymentStatus::Cancelled | PaymentStatus::Expired => !any_paid,
            PaymentStatus::Pending => true,
            PaymentStatus::Failed => false,
        };
        ensure(agrees, || {
            format!("{} is {} but WeChat's order paid: {paid:?}", p.id, p.status)
        })?;
        let ours: BTreeSet<&str> = refunds.iter().map(|r| r.out_refund_no.as_str()).collect();
        let theirs = self
            .wechat
            .refunds
            .iter()
            .filter(|(_, r)| of_p(&r.out_trade_no));
        for (no, _) in theirs {
            ensure(ours.contains(no.as_str()), || {
                format!("WeChat refunded {no} the gateway lacks")
            })?;
        }
        for r in refunds
            .iter()
            .filter(|r| r.status == RefundStatus::Succeeded)
        {
            let at_wechat = self.wechat.refunds.get(&r.out_refund_no);
            let ok =
                at_wechat.is_some_and(|w| w.state == RefundState::Success && w.amount == r.amount);
            ensure(ok, || {
                format!("refund {} succeeded but WeChat has {at_wechat:?}", r.id)
            })?;
        }
        Ok(())
    }

    /// What reconciliation's repair does for an order WeChat's bill shows paid and the gateway
    /// holds open: applies it through the sync path (as a notification would). Whether any
    /// was found.
    async fn repair_open_paid_orders(&mut self) -> Result<bool, String> {
        let paid: Vec<(String, String)> = self
            .wechat
            .orders
            .iter()
            .filter_map(|(no, o)| Some((no.clone(), o.paid.clone()?)))
            .collect();
        let mut any = false;
        for (no, tx) in paid {
            let found = self.store.payment_attempt(MERCHANT, &no).await;
            let open = found.map_err(err)?;
            if open.is_some_and(|(a, _)| a.status == AttemptStatus::Open) {
                any = true;
                self.tally.repaired += 1;
                self.continue_with(Op::Notify {
                    out_trade_no: no,
                    tx,
                    payment: None,
                });
                self.finish_in_flight().await?;
            }
        }
        Ok(any)
    }

    /// Every order WeChat paid either paid its payment or, paid twice, was refunded in full
    /// (or its refund failed at WeChat, in the open).
    async fn check_paid_orders(&self) -> Verdict {
        for (no, o) in self.wechat.orders.iter().filter(|(_, o)| o.paid.is_some()) {
            let p = self.store.payment_by_out_trade_no(MERCHANT, no).await;
            let p = p
                .map_err(err)?
                .ok_or_else(|| format!("order {no} has no payment"))?;
            let paid_it = matches!(
                p.status,
                PaymentStatus::Succeeded | PaymentStatus::Refunded | PaymentStatus::PaidAfterClose
            ) && p.transaction_id == o.paid;
            if paid_it {
                continue;
            }
            let refund = self
                .store
                .refund_by_merchant_refund_id(MERCHANT, &format!("dup_{no}"))
                .await;
            let refund = refund.map_err(err)?;
            // Returned in full; or WeChat closed the refund, which the merchant hears of
            // (refund.failed) and a person settles.
            let returned = refund.as_ref().is_some_and(|r| {
                r.amount == o.amount
                    && (r.status == RefundStatus::Succeeded || r.status == RefundStatus::Failed)
            });
            ensure(returned, || {
                format!(
                    "order {no} paid {:?}: {} is {} with {:?}, its refund {refund:?}",
                    o.paid, p.id, p.status, p.transaction_id
                )
            })?;
        }
        Ok(())
    }

    /// Each status a payment or refund reached was announced exactly once, and each order
    /// paid twice once, with versions in order.
    async fn check_events(&self, (p, refunds): &Loaded) -> Verdict {
        let store = &self.store;
        let attempts = store.payment_attempts(&p.id).await.map_err(err)?;
        let twice = attempts
            .iter()
            .filter(|a| a.status == AttemptStatus::Duplicate)
            .count();
        let mut objects = vec![(p.id.clone(), p.status != PaymentStatus::Pending, twice)];
        for r in refunds {
            objects.push((r.id.clone(), r.status != RefundStatus::Pending, 0));
        }
        for (object, finished, twice) in objects {
            let events = store.events_for(MERCHANT, &object).await.map_err(err)?;
            let versions: Vec<i64> = events.iter().map(|e| e.object_version).collect();
            let ordered = versions.windows(2).all(|w| w[0] < w[1]);
            let mut statuses: Vec<&str> = events
                .iter()
                .map(|e| e.event_type.as_str())
                .filter(|t| *t != "payment.duplicate_paid")
                .collect();
            let doubles = events.len() - statuses.len();
            let count = statuses.len();
            statuses.sort_unstable();
            statuses.dedup();
            let once = statuses.len() == count && doubles == twice;
            ensure(ordered && once && finished == (count > 0), || {
                format!("{object}: events {events:?}, {twice} orders paid twice")
            })?;
        }
        Ok(())
    }

    pub(super) async fn check_ledger(&self) -> Verdict {
        let violations = self.store.ledger_violations().await.map_err(err)?;
        ensure(violations.is_empty(), || format!("ledger: {violations:?}"))
    }

    /// After the drain: every payment checked, every paid order and finished refund arrived,
    /// nothing left to deliver, the ledger whole.
    pub(super) async fn check_all(&mut self) -> Verdict {
        let known: Vec<String> = self.known.iter().map(|(id, _)| id.clone()).collect();
        for id in &known {
            if let Some(loaded) = self.check_payment(id).await? {
                self.check_events(&loaded).await?;
            }
        }
        self.check_paid_orders().await?;
        for (no, w) in &self.wechat.refunds {
            let r = self.store.refund_by_out_refund_no(MERCHANT, no).await;
            let status = r.map_err(err)?.map(|r| r.status);
            let expected = match w.state {
                RefundState::Success => RefundStatus::Succeeded,
                RefundState::Closed => RefundStatus::Failed,
                RefundState::Processing => RefundStatus::Pending,
            };
            ensure(status == Some(expected), || {
                format!("refund {no} is {status:?}, WeChat {w:?}")
            })?;
        }
        let kept = self
            .store
            .ops_snapshot(self.now)
            .await
            .map_err(err)?
            .payments;
        let counted = self.store.payment_counts_from_rows().await;
        let counted = counted.map_err(err)?;
        ensure(kept == counted, || {
            format!("payments counted {kept:?}, in rows {counted:?}")
        })?;
        let far = self.now + 365 * 86_400_000;
        let left = self.store.claim_due_deliveries(far, 1, 1, &[]).await;
        ensure(left.map_err(err)?.is_empty(), || "deliveries left".into())?;
        let left = self.store.claim_due_refunds(far, 1).await;
        ensure(left.map_err(err)?.is_empty(), || {
            "refunds left pending".into()
        })?;
        self.check_ledger().await
    }

    /// Stops the faults and runs everything to its end: operations in flight, notifications,
    /// WeChat's refunds, and rounds of sync and delivery until a round finds nothing to do.
    pub(super) async fn drain(&mut self) -> Verdict {
        self.faults = false;
        self.now += PAST_EXPIRY_MS;
        for _ in 0..DRAIN_ROUNDS {
            self.finish_in_flight().await?;
            let mut busy =
                !self.wechat.paid_notes.is_empty() || !self.wechat.processing().is_empty();
            while !self.wechat.paid_notes.is_empty() {
                self.start_notify().await?;
                self.finish_in_flight().await?;
            }
            while !self.wechat.processing().is_empty() {
                self.wechat_settles_a_refund();
            }
            while !self.wechat.refund_notes.is_empty() {
                self.start_refund_notify().await?;
                self.finish_in_flight().await?;
            }
            self.now += DRAIN_TICK_MS;
            busy |= self.repair_open_paid_orders().await?;
            for op in [Op::Sync, Op::RefundSync, Op::Deliver { claimed: None }] {
                busy |= self.rounds_of(op).await?;
            }
            if !busy {
                return Ok(());
            }
        }
        Err(format!(
            "still busy after {DRAIN_ROUNDS} rounds of draining"
        ))
    }

    /// Runs claims of one kind until one claims nothing: whether any did.
    async fn rounds_of(&mut self, op: Op) -> Result<bool, String> {
        let mut any = false;
        loop {
            self.start(op.clone()).await?;
            if self.in_flight.is_empty() {
                return Ok(any);
            }
            any = true;
            self.finish_in_flight().await?;
        }
    }

    async fn finish_in_flight(&mut self) -> Verdict {
        while !self.in_flight.is_empty() {
            if let Some(id) = self.advance(0).await? {
                self.check_payment(&id).await?;
            }
        }
        Ok(())
    }
}
