//! The operations the scheduler interleaves, one store call per move, and what WeChat does
//! between them. Each mirrors the order in which the gateway makes its store calls and its
//! calls to WeChat.

use super::*;

/// What one move of an operation led to: whether it is done, and the payment it touched.
type Moved = Result<(bool, Option<String>), String>;

impl Simulation {
    pub(super) fn create_op(&mut self) -> Op {
        let id = self.id("pay");
        let mut row = crate::checks::payment(&id, MERCHANT, &id, self.now);
        row.out_trade_no = id.clone();
        row.amount = self.rng.random_range(1..=100_000);
        Op::Create {
            row,
            inserted: false,
        }
    }

    /// A payer pays one of the open orders; WeChat notifies (or the notification is lost, or
    /// comes twice).
    pub(super) fn payer_pays(&mut self) -> Option<String> {
        let open = self.wechat.open_orders();
        if open.is_empty() {
            return None;
        }
        let no = open[self.rng.random_range(0..open.len())].clone();
        let tx = self.wechat.pay(&no)?;
        self.tally.paid += 1;
        if self.chance(10) {
            self.tally.lost_notes += 1;
            return None;
        }
        self.wechat.paid_notes.push((no.clone(), tx.clone()));
        if self.chance(10) {
            self.wechat.paid_notes.push((no, tx));
        }
        None
    }

    /// WeChat finishes one processing refund (rarely it closes it instead) and notifies.
    pub(super) fn wechat_settles_a_refund(&mut self) -> Option<String> {
        let processing = self.wechat.processing();
        if processing.is_empty() {
            return None;
        }
        let no = processing[self.rng.random_range(0..processing.len())].clone();
        let state = if self.chance(3) {
            RefundState::Closed
        } else {
            RefundState::Success
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

    /// A notification arrives: any of those on their way, not necessarily the oldest.
    pub(super) async fn start_notify(&mut self) -> Result<Option<String>, String> {
        if self.wechat.paid_notes.is_empty() {
            return Ok(None);
        }
        let i = self.rng.random_range(0..self.wechat.paid_notes.len());
        let (out_trade_no, tx) = self.wechat.paid_notes.swap_remove(i);
        self.start(Op::Notify {
            out_trade_no,
            tx,
            payment: None,
        })
        .await
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

    pub(super) async fn start_cancel(&mut self) -> Result<Option<String>, String> {
        if self.known.is_empty() {
            return Ok(None);
        }
        let (payment_id, _) = self.known[self.rng.random_range(0..self.known.len())].clone();
        self.start(Op::Cancel {
            payment_id,
            read: None,
        })
        .await
    }

    /// A refund of a payment the client knows, for any amount up to the payment's; now and
    /// then the same request again (the same merchant_refund_id).
    pub(super) async fn start_refund(&mut self) -> Result<Option<String>, String> {
        if self.known.is_empty() {
            return Ok(None);
        }
        let (payment_id, amount) = self.known[self.rng.random_range(0..self.known.len())].clone();
        let id = self.id("re");
        let row = RefundRow {
            id: id.clone(),
            merchant_id: MERCHANT.into(),
            payment_id: payment_id.clone(),
            merchant_refund_id: format!("mr_{id}"),
            out_refund_no: id,
            amount: self.rng.random_range(1..=amount),
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
            // The sabotage: a refund written outside the payment's reservation.
            attempt_out_trade_no: self.sabotage.then(|| payment_id.clone()),
        };
        self.start(Op::Refund {
            row,
            reserved: false,
        })
        .await
    }

    /// One store call of `op` (with the WeChat call before it, where the gateway makes one).
    pub(super) async fn one_call(&mut self, op: &mut Op) -> Moved {
        match op {
            Op::Create { row, inserted } => self.create(row, inserted).await,
            Op::Notify {
                out_trade_no,
                tx,
                payment,
            } => self.notify(out_trade_no, tx, payment).await,
            Op::Sync { claimed } => self.sync(claimed).await,
            Op::Cancel { payment_id, read } => self.cancel(payment_id, read).await,
            Op::Refund { row, reserved } => self.refund(row, reserved).await,
            Op::RefundNotify {
                out_refund_no,
                refund,
            } => self.refund_notify(out_refund_no, refund).await,
            Op::RefundSync { claimed } => self.refund_sync(claimed).await,
            Op::Deliver { claimed } => self.deliver(claimed).await,
        }
    }

    async fn create(&mut self, row: &PaymentRow, inserted: &mut bool) -> Moved {
        if !*inserted {
            let outcome = self
                .store
                .insert_payment(row)
                .await
                .map_err(|e| e.to_string())?;
            *inserted = outcome == InsertOutcome::Inserted;
            return Ok((!*inserted, Some(row.id.clone())));
        }
        // The prepay; the client knows the payment once its answer arrives.
        let fate = self.fate();
        self.wechat.prepay(&row.out_trade_no, row.amount, fate);
        if fate == Fate::Answered {
            self.known.push((row.id.clone(), row.amount));
            self.tally.payments += 1;
        }
        Ok((true, None))
    }

    async fn paid(&mut self, p: &PaymentRow, tx: &str, source: &str) -> Moved {
        let facts = TransitionFacts {
            now: self.now,
            source: source.into(),
            transaction_id: Some(tx.to_string()),
            paid_at: Some(self.now),
            out_trade_no: Some(p.out_trade_no.clone()),
            payer: None,
        };
        self.transition(p, PaymentEvent::Paid, &facts).await
    }

    async fn transition(&mut self, p: &PaymentRow, e: PaymentEvent, f: &TransitionFacts) -> Moved {
        let store = &self.store;
        match store
            .transition(MERCHANT, &p.id, e, f, render_payment)
            .await
        {
            Ok(outcome) => self.note(matches!(outcome, TransitionOutcome::Changed { .. })),
            // A cancel and an expiry both closed the order: the first to write wins.
            Err(StoreError::Transition(_)) if e != PaymentEvent::Paid => self.note("raced"),
            Err(err) => return Err(format!("{} {e:?}: {err}", p.id)),
        }
        Ok((true, Some(p.id.clone())))
    }

    async fn notify(&mut self, no: &str, tx: &str, payment: &mut Option<PaymentRow>) -> Moved {
        let Some(p) = payment.take() else {
            let found = self.store.payment_by_out_trade_no(MERCHANT, no).await;
            *payment = found.map_err(|e| e.to_string())?;
            return Ok((payment.is_none(), None));
        };
        self.paid(&p, tx, "callback").await
    }

    async fn sync(&mut self, claimed: &mut Option<Vec<PaymentRow>>) -> Moved {
        let Some(list) = claimed else {
            let mut rows = self
                .store
                .claim_due_syncs(self.now, CLAIM_BATCH)
                .await
                .map_err(|e| e.to_string())?;
            rows.sort_by(|a, b| a.id.cmp(&b.id));
            let done = rows.is_empty();
            *claimed = Some(rows);
            return Ok((done, None));
        };
        let p = list.remove(0);
        let done = list.is_empty();
        let order = self.wechat.orders.get(&p.out_trade_no).cloned();
        let (finished, touched) = match order.and_then(|o| o.paid) {
            Some(tx) => self.paid(&p, &tx, "sync").await?,
            None if self.now >= p.expires_at => self.close(&p, PaymentEvent::Expired).await?,
            None => {
                let attempts = p.sync_attempts + 1;
                let next = self.now + RETRY_MS * (1 << attempts.min(5));
                let store = &self.store;
                store
                    .reschedule_sync(&p.id, Some(next), attempts)
                    .await
                    .map_err(|e| e.to_string())?;
                (true, Some(p.id.clone()))
            }
        };
        Ok((done && finished, touched))
    }

    /// Closes the order at WeChat, then the payment: or finds it paid and applies that.
    async fn close(&mut self, p: &PaymentRow, event: PaymentEvent) -> Moved {
        let fate = self.fate();
        if fate == Fate::LostBefore {
            return Ok((true, None));
        }
        let closed = self.wechat.close(&p.out_trade_no);
        match (closed, fate) {
            (Err(tx), Fate::Answered) => self.paid(p, &tx, "close").await,
            (Ok(()), Fate::Answered) => {
                let facts = TransitionFacts {
                    now: self.now,
                    source: "close".into(),
                    transaction_id: None,
                    paid_at: None,
                    out_trade_no: None,
                    payer: None,
                };
                self.transition(p, event, &facts).await
            }
            // The answer was lost: the gateway learns nothing now.
            _ => Ok((true, None)),
        }
    }

    async fn cancel(&mut self, payment_id: &str, read: &mut Option<PaymentRow>) -> Moved {
        let Some(p) = read.take() else {
            let p = self.store.payment(MERCHANT, payment_id).await;
            *read = p.map_err(|e| e.to_string())?;
            let pending = read
                .as_ref()
                .is_some_and(|p| p.status == PaymentStatus::Pending);
            if !pending {
                *read = None;
            }
            return Ok((!pending, None));
        };
        self.close(&p, PaymentEvent::Cancelled).await
    }
}
