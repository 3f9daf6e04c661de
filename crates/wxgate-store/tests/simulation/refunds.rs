//! Refunds (reserve, submit, outcome by answer, notification or sync) and webhook deliveries,
//! one store call per move.

use super::*;

type Moved = Result<(bool, Option<String>), String>;

fn render_refund(r: &RefundRow) -> (String, String) {
    (
        format!("evt_{}_{}", r.id, r.version),
        format!("{{\"status\":\"{}\"}}", r.status.as_str()),
    )
}

impl Simulation {
    pub(super) async fn refund(&mut self, row: &RefundRow, reserved: &mut bool) -> Moved {
        if !*reserved {
            let outcome = self
                .store
                .reserve_refund(row)
                .await
                .map_err(|e| e.to_string())?;
            *reserved = matches!(outcome, ReserveOutcome::Reserved(_));
            self.note(*reserved);
            if *reserved {
                self.tally.refunds += 1;
            }
            return Ok((!*reserved, Some(row.payment_id.clone())));
        }
        self.submit_refund(row).await
    }

    /// The order a refund returns money from.
    fn refunded_order(row: &RefundRow) -> String {
        row.attempt_out_trade_no
            .clone()
            .unwrap_or_else(|| row.payment_id.clone())
    }

    /// Sends a refund to WeChat and writes what came back: accepted (it waits for WeChat's
    /// outcome), refused (closed), or nothing (it is sent again later, same out_refund_no).
    async fn submit_refund(&mut self, row: &RefundRow) -> Moved {
        let fate = self.fate();
        let answer = match fate {
            Fate::LostBefore => None,
            _ => Some(self.wechat.refund(
                &Self::refunded_order(row),
                &row.out_refund_no,
                row.amount,
            )),
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
        let noted = self.store.note_refund_attempt(&row.id, &note).await;
        noted.map_err(|e| e.to_string())?;
        Ok((true, Some(row.payment_id.clone())))
    }

    async fn refund_moves(&mut self, row: &RefundRow, event: RefundEvent) -> Moved {
        let facts = RefundFacts {
            now: self.now,
            wechat_refund_id: self
                .wechat
                .refunds
                .get(&row.out_refund_no)
                .map(|r| r.refund_id.clone()),
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

    /// What WeChat's state of a refund makes of it: its outcome, or a later look.
    async fn refund_as_wechat_has_it(&mut self, row: &RefundRow) -> Moved {
        match self
            .wechat
            .refunds
            .get(&row.out_refund_no)
            .map(|r| (r.state, r.refund_id.clone()))
        {
            Some((RefundState::Success, _)) => self.refund_moves(row, RefundEvent::Succeeded).await,
            Some((RefundState::Closed, _)) => self.refund_moves(row, RefundEvent::Closed).await,
            Some((RefundState::Processing, id)) => self.note_refund(row, Some(&id), None).await,
            // WeChat never got it: send it again.
            None => self.submit_refund(row).await,
        }
    }

    pub(super) async fn refund_notify(
        &mut self,
        no: &str,
        refund: &mut Option<RefundRow>,
    ) -> Moved {
        let Some(row) = refund.take() else {
            let found = self.store.refund_by_out_refund_no(MERCHANT, no).await;
            *refund = found.map_err(|e| e.to_string())?;
            return Ok((refund.is_none(), None));
        };
        match self.wechat.refunds.get(no).map(|r| r.state) {
            Some(RefundState::Success) => self.refund_moves(&row, RefundEvent::Succeeded).await,
            Some(RefundState::Closed) => self.refund_moves(&row, RefundEvent::Closed).await,
            _ => Ok((true, None)),
        }
    }

    pub(super) async fn refund_sync(&mut self, claimed: &mut Option<Vec<RefundRow>>) -> Moved {
        let Some(list) = claimed else {
            let rows = self.store.claim_due_refunds(self.now, CLAIM_BATCH).await;
            let mut rows = rows.map_err(|e| e.to_string())?;
            rows.sort_by(|a, b| a.id.cmp(&b.id));
            let done = rows.is_empty();
            *claimed = Some(rows);
            return Ok((done, None));
        };
        let row = list.remove(0);
        let done = list.is_empty();
        let (_, touched) = self.refund_as_wechat_has_it(&row).await?;
        Ok((done, touched))
    }

    pub(super) async fn deliver(&mut self, claimed: &mut Option<Vec<DeliveryRow>>) -> Moved {
        let Some(list) = claimed else {
            let store = &self.store;
            let rows = store
                .claim_due_deliveries(self.now, DELIVERY_LEASE_MS, CLAIM_BATCH, &[])
                .await;
            let mut rows = rows.map_err(|e| e.to_string())?;
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
        let outcome = if refused {
            AttemptOutcome::Retry {
                next_at: self.now + RETRY_MS,
            }
        } else {
            AttemptOutcome::Delivered
        };
        let recorded = self.store.record_attempt(&d, &attempt, outcome).await;
        let recorded = recorded.map_err(|e| e.to_string())?;
        if recorded && !refused {
            self.tally.deliveries += 1;
        }
        Ok((done, None))
    }
}
