//! The payment operations the scheduler interleaves, one store call per move, and what WeChat
//! does between them. Each makes its store calls and its calls to WeChat in the order the
//! gateway makes them (`app::payments`, `app::orders`, `sync`).

use wxgate_domain::Integration;
use wxgate_domain::payment::AttemptStatus;

use super::*;

/// What one move of an operation led to: whether it is done, and the payment it touched.
pub(super) type Moved = Result<(bool, Option<String>), String>;

/// A payment's open orders other than its current one.
fn other_open<'a>(
    p: &'a PaymentRow,
    attempts: &'a [PaymentAttemptRow],
) -> impl Iterator<Item = &'a PaymentAttemptRow> {
    attempts
        .iter()
        .filter(|a| a.status == AttemptStatus::Open && a.out_trade_no != p.out_trade_no)
}

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

    /// A payer pays one of the open orders, any attempt's; WeChat notifies (or the
    /// notification is lost, or comes twice).
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

    fn some_known(&mut self) -> Option<(String, i64)> {
        if self.known.is_empty() {
            return None;
        }
        Some(self.known[self.rng.random_range(0..self.known.len())].clone())
    }

    pub(super) async fn start_cancel(&mut self) -> Result<Option<String>, String> {
        let Some((payment_id, _)) = self.some_known() else {
            return Ok(None);
        };
        self.start(Op::Cancel {
            payment_id,
            read: None,
            attempts: None,
        })
        .await
    }

    pub(super) async fn start_new_attempt(&mut self) -> Result<Option<String>, String> {
        let Some((payment_id, _)) = self.some_known() else {
            return Ok(None);
        };
        self.start(Op::NewAttempt {
            payment_id,
            read: None,
        })
        .await
    }

    /// One store call of `op` (with the WeChat calls before it, where the gateway makes any).
    pub(super) async fn one_call(&mut self, op: &mut Op) -> Moved {
        match op {
            Op::Create { row, inserted } => self.create(row, inserted).await,
            Op::NewAttempt { payment_id, read } => self.new_attempt(payment_id, read).await,
            Op::Notify {
                out_trade_no,
                tx,
                payment,
            } => self.notify(out_trade_no, tx, payment).await,
            Op::Sync => self.sync().await,
            Op::SyncOne { p, attempts } => self.sync_one(p, attempts).await,
            Op::Cancel {
                payment_id,
                read,
                attempts,
            } => self.cancel(payment_id, read, attempts).await,
            Op::CloseOthers { p, open } => self.close_others(p, open).await,
            Op::Duplicate {
                p,
                order,
                tx,
                attempt,
            } => self.duplicate(p, order, tx, attempt).await,
            Op::Refund {
                row,
                payment,
                reserved,
            } => self.refund(row, payment, reserved).await,
            Op::RefundNotify {
                out_refund_no,
                refund,
            } => self.refund_notify(out_refund_no, refund).await,
            Op::RefundSync => self.refund_sync().await,
            Op::RefundOne { row, payment } => self.refund_one(row, payment).await,
            Op::Deliver { claimed } => self.deliver(claimed).await,
        }
    }

    async fn create(&mut self, row: &PaymentRow, inserted: &mut bool) -> Moved {
        if !*inserted {
            let outcome = self.store.insert_payment(row).await.map_err(err)?;
            *inserted = matches!(outcome, InsertOutcome::Inserted(_));
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

    async fn new_attempt(&mut self, payment_id: &str, read: &mut Option<PaymentRow>) -> Moved {
        let Some(p) = read.take() else {
            return self.read_pending(payment_id, read).await;
        };
        let started = self
            .store
            .start_attempt(&p, Integration::Native, self.now, self.now + RETRY_MS)
            .await;
        if let AttemptStart::Started(a) = started.map_err(err)? {
            let fate = self.fate();
            self.wechat.prepay(&a.out_trade_no, p.amount, fate);
            self.tally.attempts += 1;
        }
        Ok((true, Some(p.id)))
    }

    /// The first move of an operation on a pending payment: the payment read; the operation
    /// ends here unless it is still pending.
    async fn read_pending(&mut self, payment_id: &str, read: &mut Option<PaymentRow>) -> Moved {
        let found = self
            .store
            .payment(MERCHANT, payment_id)
            .await
            .map_err(err)?;
        *read = found.filter(|p| p.status == PaymentStatus::Pending);
        Ok((read.is_none(), None))
    }

    /// WeChat says `order` of `p` was paid by `tx`: the payment succeeds (then its other
    /// orders are closed), or, paid already by another, this order is refunded.
    async fn paid(&mut self, p: &PaymentRow, order: &str, tx: &str, source: &str) -> Moved {
        let by_another = |q: &PaymentRow| q.transaction_id.as_deref().is_some_and(|t| t != tx);
        if by_another(p) {
            self.continue_with(self.duplicate_op(p, order, tx));
            return Ok((true, Some(p.id.clone())));
        }
        let facts = TransitionFacts {
            now: self.now,
            source: source.into(),
            transaction_id: Some(tx.to_string()),
            paid_at: Some(self.now),
            out_trade_no: Some(order.to_string()),
            payer: None,
            closed_order: None,
        };
        let store = &self.store;
        let outcome = store.transition(MERCHANT, &p.id, PaymentEvent::Paid, &facts, render_payment);
        match outcome.await.map_err(|e| format!("{} paid: {e}", p.id))? {
            TransitionOutcome::Changed { payment, .. } => {
                self.note("paid");
                self.continue_with(Op::CloseOthers {
                    p: payment,
                    open: None,
                });
            }
            TransitionOutcome::Unchanged(now) if by_another(&now) => {
                self.continue_with(self.duplicate_op(&now, order, tx));
            }
            TransitionOutcome::Unchanged(_) => self.note("again"),
        }
        Ok((true, Some(p.id.clone())))
    }

    fn duplicate_op(&self, p: &PaymentRow, order: &str, tx: &str) -> Op {
        Op::Duplicate {
            p: p.clone(),
            order: order.to_string(),
            tx: tx.to_string(),
            attempt: None,
        }
    }

    async fn notify(&mut self, no: &str, tx: &str, payment: &mut Option<PaymentRow>) -> Moved {
        let Some(p) = payment.take() else {
            let found = self.store.payment_by_out_trade_no(MERCHANT, no).await;
            *payment = found.map_err(err)?;
            return Ok((payment.is_none(), None));
        };
        self.paid(&p, no, tx, "callback").await
    }

    async fn sync(&mut self) -> Moved {
        let mut rows = self
            .store
            .claim_due_syncs(self.now, CLAIM_BATCH)
            .await
            .map_err(err)?;
        rows.sort_by(|a, b| a.id.cmp(&b.id));
        for p in rows {
            self.continue_with(Op::SyncOne { p, attempts: None });
        }
        Ok((true, None))
    }

    /// One claimed payment: its earlier orders first (one paid wins), then its current one:
    /// paid, past its time (closed), or looked at again later.
    async fn sync_one(
        &mut self,
        p: &PaymentRow,
        attempts: &mut Option<Vec<PaymentAttemptRow>>,
    ) -> Moved {
        let Some(list) = attempts.take() else {
            *attempts = Some(self.store.payment_attempts(&p.id).await.map_err(err)?);
            return Ok((false, None));
        };
        if let Some((order, tx)) = self.earlier_paid(p, &list) {
            return self.paid(p, &order, &tx, "sync").await;
        }
        let current = self
            .wechat
            .orders
            .get(&p.out_trade_no)
            .and_then(|o| o.paid.clone());
        match current {
            Some(tx) => self.paid(p, &p.out_trade_no.clone(), &tx, "sync").await,
            None if self.now >= p.expires_at => {
                self.close_all(p, &list, PaymentEvent::Expired).await
            }
            None => {
                let attempts = p.sync_attempts + 1;
                let next = self.now + RETRY_MS * (1 << attempts.min(5));
                let store = &self.store;
                store
                    .reschedule_sync(&p.id, Some(next), attempts)
                    .await
                    .map_err(err)?;
                Ok((true, Some(p.id.clone())))
            }
        }
    }

    /// An open earlier order of `p` that WeChat has paid.
    fn earlier_paid(
        &self,
        p: &PaymentRow,
        attempts: &[PaymentAttemptRow],
    ) -> Option<(String, String)> {
        other_open(p, attempts).find_map(|a| {
            let order = self.wechat.orders.get(&a.out_trade_no)?;
            Some((a.out_trade_no.clone(), order.paid.clone()?))
        })
    }

    /// Ends a payment: its earlier orders closed at WeChat, then its current one; an order
    /// found paid wins, else `event` (cancelled or expired) is applied.
    async fn close_all(
        &mut self,
        p: &PaymentRow,
        attempts: &[PaymentAttemptRow],
        event: PaymentEvent,
    ) -> Moved {
        let earlier = other_open(p, attempts);
        let mut orders: Vec<String> = earlier.map(|a| a.out_trade_no.clone()).collect();
        orders.push(p.out_trade_no.clone());
        for order in orders {
            let fate = self.fate();
            if fate == Fate::LostBefore {
                return Ok((true, None));
            }
            let closed = self.wechat.close(&order);
            match (closed, fate) {
                (Err(tx), Fate::Answered) => return self.paid(p, &order, &tx, "close").await,
                (Ok(()), Fate::Answered) => {}
                // The answer was lost: the payment does not end now.
                _ => return Ok((true, None)),
            }
        }
        let facts = TransitionFacts {
            now: self.now,
            source: "close".into(),
            closed_order: Some(p.out_trade_no.clone()),
            ..TransitionFacts::default()
        };
        let store = &self.store;
        match store
            .transition(MERCHANT, &p.id, event, &facts, render_payment)
            .await
        {
            // The payer started another order meanwhile: a cancel closes that one too (an
            // expiry is met again by the next sync).
            Ok(TransitionOutcome::Unchanged(now)) if now.status.is_pending() => {
                self.note("reopened");
                if event == PaymentEvent::Cancelled {
                    self.continue_with(Op::Cancel {
                        payment_id: p.id.clone(),
                        read: None,
                        attempts: None,
                    });
                }
            }
            Ok(outcome) => self.note(matches!(outcome, TransitionOutcome::Changed { .. })),
            // A cancel and an expiry both closed the orders: the first to write wins.
            Err(StoreError::Transition(_)) => self.note("raced"),
            Err(e) => return Err(format!("{} {event:?}: {e}", p.id)),
        }
        Ok((true, Some(p.id.clone())))
    }

    async fn cancel(
        &mut self,
        payment_id: &str,
        read: &mut Option<PaymentRow>,
        attempts: &mut Option<Vec<PaymentAttemptRow>>,
    ) -> Moved {
        let Some(p) = read.clone() else {
            return self.read_pending(payment_id, read).await;
        };
        let Some(list) = attempts.take() else {
            *attempts = Some(self.store.payment_attempts(&p.id).await.map_err(err)?);
            return Ok((false, None));
        };
        self.close_all(&p, &list, PaymentEvent::Cancelled).await
    }

    /// After a payment: each of its other open orders closed at WeChat and then in the store;
    /// one found paid is the payer paying twice. A lost answer stops the round (the gateway
    /// logs it and goes on).
    async fn close_others(
        &mut self,
        p: &PaymentRow,
        open: &mut Option<Vec<PaymentAttemptRow>>,
    ) -> Moved {
        let Some(list) = open else {
            let all = self.store.payment_attempts(&p.id).await.map_err(err)?;
            let others: Vec<PaymentAttemptRow> = other_open(p, &all).cloned().collect();
            let done = others.is_empty();
            *open = Some(others);
            return Ok((done, None));
        };
        let a = list.remove(0);
        let done = list.is_empty();
        if self.fate() != Fate::Answered {
            return Ok((true, None));
        }
        match self.wechat.close(&a.out_trade_no) {
            Ok(()) => {
                let store = &self.store;
                store
                    .close_attempt(MERCHANT, &a.out_trade_no, self.now)
                    .await
                    .map_err(err)?;
            }
            Err(tx) => self.continue_with(self.duplicate_op(p, &a.out_trade_no, &tx)),
        }
        Ok((done, Some(p.id.clone())))
    }

    /// An order paid twice: its attempt read, then marked with its event and ledger posting,
    /// and refunded in full (`dup_{order}`: made once, however often it is found).
    async fn duplicate(
        &mut self,
        p: &PaymentRow,
        order: &str,
        tx: &str,
        attempt: &mut Option<PaymentAttemptRow>,
    ) -> Moved {
        let store = &self.store;
        let Some(a) = attempt.take() else {
            let found = store.payment_attempt(MERCHANT, order).await.map_err(err)?;
            let Some((a, _)) = found else {
                return Err(format!("no attempt {order} of {}", p.id));
            };
            *attempt = Some(a);
            return Ok((false, None));
        };
        let event = (
            format!("evt_{order}_dup"),
            format!("{{\"duplicate\":\"{order}\"}}"),
        );
        let row = self.refund_row(&p.id, Some(format!("dup_{order}")), p.amount, Some(order));
        let marked = self
            .store
            .mark_duplicate(&a, tx, self.now, event, &row)
            .await;
        if marked.map_err(err)? {
            self.tally.duplicates += 1;
        }
        // Then `refund_duplicate`: the refund found (written with the mark) and sent.
        self.continue_with(Op::Refund {
            row,
            payment: Some(p.clone()),
            reserved: false,
        });
        Ok((true, Some(p.id.clone())))
    }
}
