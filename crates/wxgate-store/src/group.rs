//! Group commit of payment transitions on SQLite. SQLite has one writer connection, and every
//! statement is a hand-off to sqlx's worker thread and back, so a transition holds the writer
//! for four round trips while every other writer waits. Transitions that arrive meanwhile
//! queue here; whoever takes the writer next writes all of them in one transaction (one
//! conditional update each, then one batch and one commit for all), and answers each. A group
//! that fails is written again one transition at a time, so no transition fails another. On
//! PostgreSQL each transition has its own transaction, as many nodes share the database.

use tokio::sync::oneshot;

use crate::batch::Batch;
use crate::payments::transition_statements;
use crate::{Backend, Move, PaymentRow, Result, Store, Waiting, Writing};

impl Store {
    /// Writes `transition` and commits: the row after, or `None` when the payment changed
    /// first (or the outcome is unknown because the task writing its group stopped midway;
    /// either way the caller reads it again). A turn at the writer that does not come in time
    /// is an error, though a later group may still write the transition: it is conditional,
    /// so a retry finds it done.
    pub(crate) async fn write_transition(&self, transition: Move) -> Result<Option<PaymentRow>> {
        if self.backend != Backend::Sqlite {
            let mut writing = self.write().await?;
            return Ok(write_moves(&mut writing, &[&transition])
                .await?
                .pop()
                .flatten());
        }
        let (answer, mut answered) = oneshot::channel();
        let waiting = Waiting { transition, answer };
        self.group.lock().expect("group lock").push(waiting);
        // The writer's turn is the right to write the group.
        let mut writing = self.write().await?;
        // The group written before this one may have held it.
        match answered.try_recv() {
            Ok(result) => return result,
            Err(oneshot::error::TryRecvError::Closed) => return Ok(None),
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        let group = std::mem::take(&mut *self.group.lock().expect("group lock"));
        write_group(&mut writing, group).await;
        answered.await.unwrap_or(Ok(None))
    }
}

/// Writes a group in one transaction, or each of its transitions alone if that fails;
/// answers every one.
async fn write_group(writing: &mut Writing, group: Vec<Waiting>) {
    let all: Vec<&Move> = group.iter().map(|w| &w.transition).collect();
    if all.len() > 1
        && let Ok(afters) = write_moves(writing, &all).await
    {
        for (w, after) in group.into_iter().zip(afters) {
            let _ = w.answer.send(Ok(after));
        }
        return;
    }
    for w in group {
        let written = write_moves(writing, &[&w.transition]).await;
        let _ = w
            .answer
            .send(written.map(|mut afters| afters.pop().flatten()));
    }
}

/// Writes `moves` in one transaction (a conditional update each, then one batch and one
/// commit): for each, the row after, or `None` when the payment changed first.
async fn write_moves(writing: &mut Writing, moves: &[&Move]) -> Result<Vec<Option<PaymentRow>>> {
    let mut tx = writing.begin().await?;
    let mut batch = Batch::default();
    let mut afters = Vec::with_capacity(moves.len());
    for m in moves {
        let render = &*m.render;
        let after =
            transition_statements(&mut tx, &mut batch, &m.current, m.to, &m.facts, render).await?;
        afters.push(after);
    }
    batch.run(&mut tx).await?;
    tx.commit().await?;
    Ok(afters)
}
