//! Group commit of payment transitions on SQLite. SQLite has one writer connection, and every
//! statement is a hand-off to sqlx's worker thread and back, so a transition holds the writer
//! for four round trips while every other writer waits. Transitions that arrive meanwhile
//! queue here; whoever takes the writer next writes all of them in one transaction (one
//! conditional update each, then one batch and one commit for all), and answers each. A group
//! that fails is written again one transition at a time, so no transition fails another. On
//! PostgreSQL each transition has its own transaction, as many nodes share the database.

use tokio::sync::oneshot;
use wxgate_domain::payment::PaymentStatus;

use crate::batch::Batch;
use crate::payments::{transition_statements, write_payment_transition};
use crate::{Backend, PaymentRow, Render, Result, Store, TransitionFacts, Waiting};

impl Store {
    /// Writes `current` moved to `to` (see `write_payment_transition`) and commits: the row
    /// after, or `None` when the payment changed first (or the outcome is unknown because the
    /// task writing its group stopped midway; either way the caller reads it again).
    pub(crate) async fn write_transition(
        &self,
        current: &PaymentRow,
        to: PaymentStatus,
        facts: &TransitionFacts,
        render: &Render,
    ) -> Result<Option<PaymentRow>> {
        if self.backend != Backend::Sqlite {
            return self.write_alone(current, to, facts, render).await;
        }
        let (answer, mut answered) = oneshot::channel();
        self.group
            .waiting
            .lock()
            .expect("group lock")
            .push(Waiting {
                current: current.clone(),
                to,
                facts: facts.clone(),
                render: render.clone(),
                answer,
            });
        let _writing = self.group.writing.lock().await;
        // The group written before this one may have held it.
        match answered.try_recv() {
            Ok(result) => return result,
            Err(oneshot::error::TryRecvError::Closed) => return Ok(None),
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        let group = std::mem::take(&mut *self.group.waiting.lock().expect("group lock"));
        self.write_group(group).await;
        answered.await.unwrap_or(Ok(None))
    }

    /// Writes a group in one transaction, or each of its transitions alone if that fails;
    /// answers every one.
    async fn write_group(&self, group: Vec<Waiting>) {
        if group.len() > 1
            && let Ok(afters) = self.write_together(&group).await
        {
            for (w, after) in group.into_iter().zip(afters) {
                let _ = w.answer.send(Ok(after));
            }
            return;
        }
        for w in group {
            let written = self
                .write_alone(&w.current, w.to, &w.facts, &w.render)
                .await;
            let _ = w.answer.send(written);
        }
    }

    async fn write_together(&self, group: &[Waiting]) -> Result<Vec<Option<PaymentRow>>> {
        let mut writing = self.write().await?;
        let mut tx = writing.begin().await?;
        let mut batch = Batch::default();
        let mut afters = Vec::with_capacity(group.len());
        for w in group {
            let render = &*w.render;
            let after =
                transition_statements(&mut tx, &mut batch, &w.current, w.to, &w.facts, render)
                    .await?;
            afters.push(after);
        }
        batch.run(&mut tx).await?;
        tx.commit().await?;
        Ok(afters)
    }

    async fn write_alone(
        &self,
        current: &PaymentRow,
        to: PaymentStatus,
        facts: &TransitionFacts,
        render: &Render,
    ) -> Result<Option<PaymentRow>> {
        let mut writing = self.write().await?;
        let mut tx = writing.begin().await?;
        let written = write_payment_transition(&mut tx, current, to, facts, &**render).await?;
        match written {
            Some(_) => tx.commit().await?,
            None => tx.rollback().await?,
        }
        Ok(written)
    }
}
