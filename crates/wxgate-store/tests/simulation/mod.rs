//! A seeded, deterministic simulation of the store's state machines: payments, refunds with
//! their reservations, status sync and webhook deliveries, on a virtual clock, against a model
//! of WeChat (`wechat.rs`).
//!
//! Each step of the seeded scheduler does one thing: starts an operation (a create, a
//! callback, a sync round, a cancel, a refund, a refund callback or sync, a delivery round),
//! moves one operation in flight by exactly one store call, lets WeChat act (a payer pays, a
//! refund settles), advances the clock, or crashes: an operation in flight is dropped between
//! two store calls (one task lost) or all of them are (a node restarts). WeChat's answers are
//! the seed's too: answered, refused, or lost before or after WeChat committed; notifications
//! are lost, doubled and delivered out of order. After every step the payment it touched is
//! checked against the invariants, the whole ledger every `LEDGER_CHECK_EVERY` steps; at the
//! end the faults stop, everything drains, and every paid order, refund and event must have
//! arrived. The same seed replays the same run: every choice comes from it, claims are
//! handled in a stable order, and ids come from counters.
//!
//! `WXGATE_SIM_SEED` replays a seed; `WXGATE_SIM_STEPS` sets the length (100,000 by default).

mod wechat;

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wxgate_domain::payment::{PaymentEvent, PaymentStatus};
use wxgate_domain::refund::{RefundEvent, RefundStatus};
use wxgate_store::*;

use wechat::{Fate, RefundAnswer, RefundState, WeChat};

/// Steps of a run unless `WXGATE_SIM_STEPS` says otherwise.
pub const DEFAULT_STEPS: u64 = 100_000;
/// How often the whole ledger is checked (it reads every entry).
const LEDGER_CHECK_EVERY: u64 = 1_000;
/// Operations in flight at once at most (one node's worth of concurrent work).
const IN_FLIGHT_MAX: usize = 8;
/// How many rows one claim takes.
const CLAIM_BATCH: i64 = 4;
const DELIVERY_LEASE_MS: i64 = 30_000;
const RETRY_MS: i64 = 10_000;
const MERCHANT: &str = "mch_sim";
const ENDPOINT: &str = "we_sim";

/// A store error as the run reports it.
fn err(e: StoreError) -> String {
    e.to_string()
}

/// A payment's event as the store writes it: an id unique per version, and its status.
fn render_payment(p: &PaymentRow) -> (String, String) {
    (
        format!("evt_{}_{}", p.id, p.version),
        format!("{{\"status\":\"{}\"}}", p.status),
    )
}

/// Something the scheduler keeps in flight: an operation part way through its store calls.
/// An operation that goes on in more store calls of the same task (after a payment, closing
/// its other orders; refunding an order paid twice; one claimed row of a round) continues as
/// an operation of its own, which a crash can drop like any other.
#[derive(Debug, Clone)]
enum Op {
    Create {
        row: PaymentRow,
        inserted: bool,
    },
    /// Another order for a pending payment (another device, a fresh credential).
    NewAttempt {
        payment_id: String,
        read: Option<PaymentRow>,
    },
    Notify {
        out_trade_no: String,
        tx: String,
        payment: Option<PaymentRow>,
    },
    /// A status-sync round: claims, then each claimed payment is a `SyncOne`.
    Sync,
    SyncOne {
        p: PaymentRow,
        attempts: Option<Vec<PaymentAttemptRow>>,
    },
    Cancel {
        payment_id: String,
        read: Option<PaymentRow>,
        attempts: Option<Vec<PaymentAttemptRow>>,
    },
    /// A paid payment's other orders, closed at WeChat one by one.
    CloseOthers {
        p: PaymentRow,
        open: Option<Vec<PaymentAttemptRow>>,
    },
    /// An order paid after its payment was paid by another: recorded, then refunded.
    Duplicate {
        p: PaymentRow,
        order: String,
        tx: String,
        attempt: Option<PaymentAttemptRow>,
    },
    Refund {
        row: RefundRow,
        payment: Option<PaymentRow>,
        reserved: bool,
    },
    RefundNotify {
        out_refund_no: String,
        refund: Option<RefundRow>,
    },
    /// A refund round: claims, then each claimed refund is a `RefundOne`.
    RefundSync,
    RefundOne {
        row: RefundRow,
        payment: Option<PaymentRow>,
    },
    Deliver {
        claimed: Option<Vec<DeliveryRow>>,
    },
}

/// A notification of WeChat's, being handled.
#[derive(Debug, Clone)]
enum Note {
    Paid(String, String),
    Refund(String),
}

/// An operation in flight, and the notification it answers, if any.
#[derive(Debug, Clone)]
struct Task {
    op: Op,
    answering: Option<Note>,
}

/// What a run did, for the report and for comparing two runs of one seed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub steps: u64,
    pub store_calls: u64,
    pub crashes: u64,
    pub payments: u64,
    pub paid: u64,
    pub refunds: u64,
    /// Further orders made for pending payments.
    pub attempts: u64,
    /// Orders paid after their payment was paid by another, recorded and refunded.
    pub duplicates: u64,
    /// Paid orders the gateway still held open once the run drained, applied as
    /// reconciliation's repair would.
    pub repaired: u64,
    pub lost_answers: u64,
    pub lost_notes: u64,
    pub deliveries: u64,
    /// A digest of every choice and outcome: equal for two runs of one seed.
    pub trace: u64,
}

pub struct Simulation {
    rng: ChaCha8Rng,
    store: Store,
    now: i64,
    wechat: WeChat,
    in_flight: Vec<Task>,
    /// The notification the operation being moved answers.
    answering: Option<Note>,
    /// Payments whose create was answered: the client knows them.
    known: Vec<(String, i64)>,
    faults: bool,
    next_id: u64,
    trace: DefaultHasher,
    pub tally: Tally,
    /// Test-only sabotage: every refund written outside its payment's reservation.
    pub sabotage: bool,
}

/// A broken invariant, with where it broke.
pub type Verdict = Result<(), String>;

impl Simulation {
    pub async fn new(store: Store, seed: u64) -> Self {
        let now = 1_767_225_600_000; // 2026-01-01T00:00:00Z
        store
            .insert_merchant(&crate::checks::merchant(MERCHANT))
            .await
            .unwrap();
        store
            .insert_webhook_endpoint(
                &WebhookEndpointRow {
                    id: ENDPOINT.into(),
                    merchant_id: MERCHANT.into(),
                    url: "http://shop.invalid/hooks".into(),
                    events: "*".into(),
                    secret_id: "whsec_1".into(),
                    secret_sealed: "sealed".into(),
                    created_at: now,
                    deleted_at: None,
                },
                1,
            )
            .await
            .unwrap();
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            store,
            now,
            wechat: WeChat::default(),
            in_flight: Vec::new(),
            answering: None,
            known: Vec::new(),
            faults: true,
            next_id: 0,
            trace: DefaultHasher::new(),
            tally: Tally::default(),
            sabotage: false,
        }
    }

    fn note(&mut self, what: impl Hash) {
        what.hash(&mut self.trace);
    }

    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}_{:08}", self.next_id)
    }

    /// Whether a fault with this chance happens now (never once the faults stop).
    fn chance(&mut self, percent: u32) -> bool {
        self.faults && self.rng.random_range(0..100) < percent
    }

    fn fate(&mut self) -> Fate {
        let fate = if self.chance(5) {
            Fate::LostAfterCommit
        } else if self.chance(5) {
            Fate::LostBefore
        } else {
            Fate::Answered
        };
        if fate != Fate::Answered {
            self.tally.lost_answers += 1;
        }
        fate
    }

    /// Runs `steps` steps, checking after each; then drains without faults and checks that
    /// everything arrived.
    pub async fn run(&mut self, steps: u64) -> Verdict {
        for step in 0..steps {
            self.tally.steps += 1;
            let touched = self.step().await.map_err(|e| format!("step {step}: {e}"))?;
            if let Some(payment_id) = touched {
                self.check_payment(&payment_id)
                    .await
                    .map_err(|e| format!("step {step}: {e}"))?;
            }
            if step % LEDGER_CHECK_EVERY == 0 {
                self.check_ledger()
                    .await
                    .map_err(|e| format!("step {step}: {e}"))?;
            }
        }
        self.drain().await?;
        self.check_all().await?;
        self.tally.trace = self.trace.finish();
        Ok(())
    }

    /// One scheduler step; the payment it touched, if any.
    async fn step(&mut self) -> Result<Option<String>, String> {
        let roll = self.rng.random_range(0..100u32);
        self.note(roll);
        let full = self.in_flight.len() >= IN_FLIGHT_MAX;
        match roll {
            0..=9 if !full => {
                let op = self.create_op();
                self.start(op).await
            }
            10..=17 => Ok(self.payer_pays()),
            18..=25 if !full => self.start_notify().await,
            26..=30 if !full => self.start(Op::Sync).await,
            31 if !full => self.start_cancel().await,
            32..=33 if !full => self.start_new_attempt().await,
            34..=42 if !full => self.start_refund().await,
            43..=48 => Ok(self.wechat_settles_a_refund()),
            49..=54 if !full => self.start_refund_notify().await,
            55..=58 if !full => self.start(Op::RefundSync).await,
            59..=64 if !full => self.start(Op::Deliver { claimed: None }).await,
            65..=89 => self.advance_one().await,
            90..=91 => Ok(self.crash_one()),
            92 => Ok(self.restart()),
            _ => {
                let ms = if self.chance(5) {
                    61_000
                } else {
                    self.rng.random_range(1..3_000)
                };
                self.now += ms;
                Ok(None)
            }
        }
    }

    async fn start(&mut self, op: Op) -> Result<Option<String>, String> {
        // A notification is acknowledged only once everything its handling does is done.
        let answering = match &op {
            Op::Notify {
                out_trade_no, tx, ..
            } => Some(Note::Paid(out_trade_no.clone(), tx.clone())),
            Op::RefundNotify { out_refund_no, .. } => Some(Note::Refund(out_refund_no.clone())),
            _ => None,
        };
        self.in_flight.push(Task { op, answering });
        let last = self.in_flight.len() - 1;
        self.advance(last).await
    }

    async fn advance_one(&mut self) -> Result<Option<String>, String> {
        if self.in_flight.is_empty() {
            return Ok(None);
        }
        let i = self.rng.random_range(0..self.in_flight.len());
        self.advance(i).await
    }

    /// Moves operation `i` by one store call; removes it when it is done.
    async fn advance(&mut self, i: usize) -> Result<Option<String>, String> {
        let Task { mut op, answering } = self.in_flight[i].clone();
        self.answering = answering.clone();
        self.tally.store_calls += 1;
        let (done, touched) = self
            .one_call(&mut op)
            .await
            .map_err(|e| format!("{op:?}: {e}"))?;
        self.note((done, &touched));
        if done {
            self.in_flight.remove(i);
        } else {
            self.in_flight[i] = Task { op, answering };
        }
        Ok(touched)
    }

    /// The same task goes on with more store calls: as an operation of its own, answering the
    /// same notification.
    fn continue_with(&mut self, op: Op) {
        let answering = self.answering.clone();
        self.in_flight.push(Task { op, answering });
    }

    /// A task dies between two store calls. A notification it was handling is sent again by
    /// WeChat, which retries until acknowledged.
    fn crash_one(&mut self) -> Option<String> {
        if self.in_flight.is_empty() || !self.faults {
            return None;
        }
        let i = self.rng.random_range(0..self.in_flight.len());
        let task = self.in_flight.remove(i);
        self.tally.crashes += 1;
        self.requeue(task.answering);
        None
    }

    /// The node restarts: every operation in flight is lost; leases expire later.
    fn restart(&mut self) -> Option<String> {
        if !self.faults {
            return None;
        }
        self.tally.crashes += self.in_flight.len() as u64;
        for task in std::mem::take(&mut self.in_flight) {
            self.requeue(task.answering);
        }
        None
    }

    fn requeue(&mut self, note: Option<Note>) {
        match note {
            Some(Note::Paid(out_trade_no, tx)) => self.wechat.paid_notes.push((out_trade_no, tx)),
            Some(Note::Refund(out_refund_no)) => self.wechat.refund_notes.push(out_refund_no),
            None => {}
        }
    }
}

mod checks;
mod ops;
mod refunds;
