//! Refunds (read the payment, reserve, submit, and the outcome by answer, notification or
//! sync) and webhook deliveries, one store call per move, in the order of `app::refunds` and
//! `delivery`.

use super::ops::Moved;
use super::*;

fn render_refund(r: &RefundRow) -> (String, String) {
    (
        format!("evt_{}_{}", r.id, r.version),
        format!("{{\"status\":\"{}\"}}", r.status.as_str()),
    )
}

impl Simulation {
    /// A new refund of `amount`; `order` names a twice-paid order it returns (outside the
    /// payment's sums).
    /// `merchant_refund_id` defaults to one of its own.
    pub(super) fn refund_row(
        &mut self,
        payment_id: &str,
        merchant_refund_id: Option<String>,
        amount: i64,
        order: Option<&str>,
    ) -> RefundRow {
        let id = self.id("re");
        RefundRow {
            id: id.clone(),
            merchant_id: MERCHANT.into(),
            payment_id: payment_id.to_string(),
            merchant_refund_id: merchant_refund_id.unwrap_or_else(|| format!("mr_{id}")),
            out_refund_no: id,
            amount,
            currency: "CNY".into(),
            reason: None,
            status: RefundStatus::Pending,
            version: 1,
            fingerprint: "f".into(),
            submitted: Flag::from(false),
            wechat_refund_id: None,
            last_error: None,
            created_at: self.now,
            updated_at: self.now,
            succeeded_at: None,
            sync_due_at: Some(self.now + RETRY_MS),
            sync_attempts: 0,
            claimed_until: None,
            attempt_out_trade_no: order.map(str::to_string),
        }
    }

    /// A refund of a payment the client knows, for any amount up to the payment's; now and
    /// then the same request again (the same merchant_refund_id).
    pub(super) async fn start_refund(&mut self) -> Result<Option<String>, String> {
        if self.known.is_empty() {
            return Ok(None);
        }
        let (payment_id, amount) = self.known[self.rng.random_range(0..self.known.len())].clone();
        let merchant_refund_id = self.chance(10).then(|| format!("mr_{payment_id}"));
        let amount = self.rng.random_range(1..=amount);
        // The sabotage: a refund written outside the payment's reservation.
        let order = self.sabotage.then_some(payment_id.as_str());
        let row = self.refund_row(&payment_id, merchant_refund_id, amount, order);
        self.start(Op::Refund {
            row,
            payment: None,
            reserved: false,
        })
        .await
    }

    /// WeChat finishes one processing refund (rarely it closes it instead) and notifies.
    pub(super) fn wechat_settles_a_refund(&mut self) -> Option<String> {
        let processing = self.wechat.processing();
        if processing.is_empty() {
            return None;
        }
        let no = processing[self.rng.random_range(0..processing.len())].clone();
        let state = match self.chance(3) {
            true => RefundState::Closed,
            false => RefundState::Success,
        };
        if let Some(r) = self.wechat.refunds.get_mut(&no) {
            r.state = state;
        }
        if self.chance(10) {
            self.tally.lost_notes += 1;
        } else {
            self.wechat.refund_notes.push(no);
        }
        None
    }

    pub(super) async fn start_refund_notify(&mut self) -> Result<Option<String>, String> {
        if self.wechat.refund_notes.is_empty() {
            return Ok(None);
        }
        let i = self.rng.random_range(0..self.wechat.refund_notes.len());
        let out_refund_no = self.wechat.refund_notes.swap_remove(i);
        self.start(Op::RefundNotify {
            out_refund_no,
            refund: None,
        })
        .await
    }

    /// The payment read (the request's), the amount reserved, then the refund sent.
    pub(super) async fn refund(
        &mut self,
        row: &mut RefundRow,
        payment: &mut Option<PaymentRow>,
        reserved: &mut bool,
    ) -> Moved {
        let Some(p) = payment.clone() else {
            let found = self.store.payment(MERCHANT, &row.payment_id).await;
            *payment = found.map_err(err)?;
            // The gateway refuses a refund of a payment not paid when it reads it
            // (`refund::check`), before anything is reserved: the order it would refund is
            // the one that paid, fixed from then on.
            let paid = payment.as_ref().is_some_and(|p| p.status.is_refundable());
            return Ok((!paid, None));
        };
        if !*reserved {
            let outcome = self.store.reserve_refund(row).await.map_err(err)?;
            match outcome {
                ReserveOutcome::Reserved(_) => self.tally.refunds += 1,
                // A twice-paid order's refund, written with its mark and not yet sent: this
                // task sends it (`refund_duplicate`).
                ReserveOutcome::Existing(found)
                    if found.attempt_out_trade_no.is_some()
                        && found.status == RefundStatus::Pending
                        && !found.submitted.is_set() =>
                {
                    *row = *found;
                }
                _ => return Ok((true, Some(row.payment_id.clone()))),
            }
            self.note("reserved");
            *reserved = true;
            return Ok((false, Some(row.payment_id.clone())));
        }
        self.submit_refund(&p, row).await
    }

    /// Sends a refund to WeChat and writes what came back: accepted (it waits for WeChat's
    /// outcome), refused (closed), or nothing (sent again later, with the same out_refund_no).
    async fn submit_refund(&mut self, p: &PaymentRow, row: &RefundRow) -> Moved {
        let fate = self.fate();
        let order = row.attempt_out_trade_no.as_ref().unwrap_or(&p.out_trade_no);
        let answer = match fate {
            Fate::LostBefore => None,
            _ => Some(self.wechat.refund(order, &row.out_refund_no, row.amount)),
        };
        match (answer, fate) {
            (Some(RefundAnswer::Accepted(id)), Fate::Answered) => {
                self.note_refund(row, Some(&id), None).await
            }
            (Some(RefundAnswer::Refused), Fate::Answered) => {
                self.refund_moves(row, RefundEvent::Closed).await
            }
            _ => self.note_refund(row, None, Some("timeout")).await,
        }
    }

    async fn note_refund(
        &mut self,
        row: &RefundRow,
        id: Option<&str>,
        error: Option<&str>,
    ) -> Moved {
        let note = RefundNote {
            submitted: id.is_some(),
            wechat_refund_id: id,
            last_error: error,
            next_due: Some(self.now + RETRY_MS),
            attempts: row.sync_attempts + 1,
            now: self.now,
        };
        self.store
            .note_refund_attempt(&row.id, &note)
            .await
            .map_err(err)?;
        Ok((true, Some(row.payment_id.clone())))
    }

    async fn refund_moves(&mut self, row: &RefundRow, event: RefundEvent) -> Moved {
        let at_wechat = self.wechat.refunds.get(&row.out_refund_no);
        let facts = RefundFacts {
            now: self.now,
            wechat_refund_id: at_wechat.map(|r| r.refund_id.clone()),
            succeeded_at: (event == RefundEvent::Succeeded).then_some(self.now),
            last_error: None,
        };
        let store = &self.store;
        let outcome = store
            .refund_transition(
                MERCHANT,
                &row.id,
                event,
                &facts,
                render_refund,
                render_payment,
            )
            .await
            .map_err(|e| format!("{} {event:?}: {e}", row.id))?;
        self.note(matches!(outcome, RefundTransitionOutcome::Changed { .. }));
        Ok((true, Some(row.payment_id.clone())))
    }

    pub(super) async fn refund_notify(
        &mut self,
        no: &str,
        refund: &mut Option<RefundRow>,
    ) -> Moved {
        let Some(row) = refund.take() else {
            let found = self.store.refund_by_out_refund_no(MERCHANT, no).await;
            *refund = found.map_err(err)?;
            return Ok((refund.is_none(), None));
        };
        match self.wechat.refunds.get(no).map(|r| r.state) {
            Some(RefundState::Success) => self.refund_moves(&row, RefundEvent::Succeeded).await,
            Some(RefundState::Closed) => self.refund_moves(&row, RefundEvent::Closed).await,
            _ => Ok((true, None)),
        }
    }

    pub(super) async fn refund_sync(&mut self) -> Moved {
        let rows = self.store.claim_due_refunds(self.now, CLAIM_BATCH).await;
        let mut rows = rows.map_err(err)?;
        rows.sort_by(|a, b| a.id.cmp(&b.id));
        for row in rows {
            self.continue_with(Op::RefundOne { row, payment: None });
        }
        Ok((true, None))
    }

    /// One claimed refund: its payment read, then WeChat's state of it applied, or the refund
    /// sent again when WeChat never got it.
    pub(super) async fn refund_one(
        &mut self,
        row: &RefundRow,
        payment: &mut Option<PaymentRow>,
    ) -> Moved {
        let Some(p) = payment.take() else {
            let found = self.store.payment(MERCHANT, &row.payment_id).await;
            *payment = found.map_err(err)?;
            return Ok((payment.is_none(), None));
        };
        let at_wechat = self.wechat.refunds.get(&row.out_refund_no);
        match at_wechat.map(|r| (r.state, r.refund_id.clone())) {
            Some((RefundState::Success, _)) => self.refund_moves(row, RefundEvent::Succeeded).await,
            Some((RefundState::Closed, _)) => self.refund_moves(row, RefundEvent::Closed).await,
            Some((RefundState::Processing, id)) => self.note_refund(row, Some(&id), None).await,
            None => self.submit_refund(&p, row).await,
        }
    }

    pub(super) async fn deliver(&mut self, claimed: &mut Option<Vec<DeliveryRow>>) -> Moved {
        let Some(list) = claimed else {
            let store = &self.store;
            let rows = store
                .claim_due_deliveries(self.now, DELIVERY_LEASE_MS, CLAIM_BATCH, &[])
                .await;
            let mut rows = rows.map_err(err)?;
            rows.sort_by(|a, b| (&a.event_id, &a.endpoint_id).cmp(&(&b.event_id, &b.endpoint_id)));
            let done = rows.is_empty();
            *claimed = Some(rows);
            return Ok((done, None));
        };
        let d = list.remove(0);
        let done = list.is_empty();
        let refused = self.chance(20);
        let attempt = AttemptRow {
            event_id: d.event_id.clone(),
            endpoint_id: d.endpoint_id.clone(),
            attempt: d.attempts + 1,
            at: self.now,
            status_code: Some(if refused { 500 } else { 204 }),
            latency_ms: 1,
            error: None,
        };
        let outcome = match refused {
            true => AttemptOutcome::Retry {
                next_at: self.now + RETRY_MS,
            },
            false => AttemptOutcome::Delivered,
        };
        let recorded = self.store.record_attempt(&d, &attempt, outcome).await;
        if recorded.map_err(err)? && !refused {
            self.tally.deliveries += 1;
        }
        Ok((done, None))
    }
}
