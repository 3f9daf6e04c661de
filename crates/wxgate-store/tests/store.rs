//! One store test suite, run against SQLite always and against PostgreSQL when one is
//! reachable (see `wxgate_store::testing`). Each test gets a fresh database.

use std::sync::Arc;

use wxgate_domain::payment::{PaymentEvent, PaymentStatus};
use wxgate_store::*;

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                for db in testing::all().await {
                    eprintln!("{} on {:?}", stringify!($name), db.backend);
                    let store = db.store().await;
                    checks::$name(store.clone()).await;
                    store.close().await;
                    db.cleanup().await;
                }
            }
        )*
    };
}

on_both!(
    migrations_are_current,
    payments_made_before_their_counts_are_counted_by_the_migration,
    merchants_and_api_keys,
    payments_are_unique_per_merchant_order_id,
    transitions_write_history_and_outbox_once,
    concurrent_transitions_apply_once,
    a_payment_ends_unpaid_only_while_its_closed_order_is_current,
    listing_filters_and_pages,
    sync_work_is_claimed_once,
    idempotency_keys,
    old_idempotency_keys_are_forgotten,
    concurrent_refunds_never_reserve_more_than_was_paid,
    an_order_paid_twice_is_marked_with_its_refund,
    refund_outcomes_move_the_payments_sums,
    refunds_fall_in_the_day_wechat_took_them,
    deliveries_fan_out_to_subscribed_endpoints_and_are_claimed_once,
    old_events_are_forgotten_with_their_delivery_logs,
    a_broken_money_invariant_is_refused_not_served,
    door_tokens_live_until_they_expire,
    a_write_that_goes_away_midway_leaves_the_writer_whole,
    the_log_is_copied_into_the_database_by_the_checkpoint,
    a_log_written_to_without_pause_still_starts_over,
    each_claim_reads_the_index_of_its_open_rows,
    each_lookup_reads_its_row_by_its_key,
    the_sweep_of_orders_left_open_reads_the_open_attempts_index,
);

mod simulation;

/// The seeded simulation on SQLite: `WXGATE_SIM_STEPS` steps (100,000 unless set) from
/// `WXGATE_SIM_SEED` (a fresh seed unless set, printed so that a failure replays).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_simulation_keeps_every_invariant() {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let seed = env("WXGATE_SIM_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let steps = env("WXGATE_SIM_STEPS").unwrap_or(simulation::DEFAULT_STEPS);
    eprintln!("simulation: seed {seed}, {steps} steps (WXGATE_SIM_SEED={seed} replays it)");
    let (tally, verdict) = simulate(seed, steps, false).await;
    eprintln!("simulation: {tally:?}");
    if let Err(e) = verdict {
        panic!("seed {seed}: {e}\nreplay: WXGATE_SIM_SEED={seed} WXGATE_SIM_STEPS={steps}");
    }
    assert!(
        tally.paid > 0 && tally.refunds > 0 && tally.crashes > 0,
        "{tally:?}"
    );
}

/// Every choice comes from the seed: two runs of one seed do the same things.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_seed_replays_the_same_run() {
    let (first, verdict) = simulate(7, 3_000, false).await;
    verdict.unwrap();
    let (second, verdict) = simulate(7, 3_000, false).await;
    verdict.unwrap();
    assert_eq!(first, second);
    let (other, _) = simulate(8, 3_000, false).await;
    assert_ne!(first.trace, other.trace, "another seed, another run");
}

/// The simulation's checks are not idle: refunds written outside their payment's reservation
/// (the store's guard bypassed, in the test only) are found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_outside_its_reservation_is_caught() {
    let (_, verdict) = simulate(11, 20_000, true).await;
    let found = verdict.expect_err("the sabotage must be found");
    eprintln!("found: {found}");
    assert!(found.contains("refunds of order"), "{found}");
}

/// A pooled PostgreSQL connection the server ended (as a restart does) answers as
/// unavailable (a 503 for the caller to retry, not a 500) and is replaced: reads work again
/// within as many tries as the pool has connections. (SQLite has no server to lose.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_server_ended_is_unavailable_then_replaced() {
    let Some(db) = testing::postgres().await else {
        return;
    };
    let store = db.store().await;
    assert!(
        store
            .payment("mch_x", "pay_x")
            .await
            .expect("a read")
            .is_none()
    );
    db.drop_connections().await;
    let mut failed: u32 = 0;
    let answered = loop {
        match store.payment("mch_x", "pay_x").await {
            Ok(found) => break found.is_none(),
            Err(e) => assert!(e.is_unavailable(), "a lost connection read as: {e}"),
        }
        failed += 1;
        assert!(
            failed <= POSTGRES_CONNECTIONS,
            "the lost connections are not replaced"
        );
    };
    assert!(answered);
    eprintln!("reads that met a lost connection: {failed}");
    store.close().await;
    db.cleanup().await;
}

async fn simulate(
    seed: u64,
    steps: u64,
    sabotage: bool,
) -> (simulation::Tally, Result<(), String>) {
    let db = testing::sqlite();
    let store = db.store().await;
    let mut sim = simulation::Simulation::new(store.clone(), seed).await;
    sim.sabotage = sabotage;
    let verdict = sim.run(steps).await;
    let tally = sim.tally.clone();
    store.close().await;
    db.cleanup().await;
    (tally, verdict)
}

mod checks {
    use super::*;

    pub fn merchant(id: &str) -> MerchantRow {
        MerchantRow {
            id: id.into(),
            name: "Test shop".into(),
            mode: wxgate_domain::MerchantMode::Sandbox,
            mchid: "1900000109".into(),
            appid: "wx8888888888888888".into(),
            mini_program_appid: None,
            api_base_url: "http://127.0.0.1:8090/".into(),
            merchant_serial_no: "ABC".into(),
            secrets_sealed: "sealed".into(),
            platform_public_key_id: Some("PUB_KEY_ID_01".into()),
            platform_public_key: Some("-----BEGIN PUBLIC KEY-----".into()),
            platform_certificate: None,
            currencies: "CNY".into(),
            paid_after_close_policy: wxgate_domain::PaidAfterClosePolicy::Accept,
            created_at: 1,
            merchant_category_code: None,
            fee_rate_bp: 60,
            payout_scene: None,
            settlement_currency: None,
        }
    }

    /// Writes polled once and dropped (their statements sent, nobody waiting for the answer)
    /// leave no transaction open and nothing half written: the next writes go through.
    pub async fn a_write_that_goes_away_midway_leaves_the_writer_whole(store: Store) {
        use futures_util::FutureExt;
        store.insert_merchant(&merchant("mch_a")).await.unwrap();
        let p = payment("pay_1", "mch_a", "order1", 1000);
        store.insert_payment(&p).await.unwrap();
        for i in 0..20 {
            let credential = format!("gone{i}");
            let _ = store
                .set_attempt_credential("mch_a", "pay_1", &p.out_trade_no, &credential, 2000 + i)
                .now_or_never();
            no_transaction_left_open(&store).await;
            let order = format!("gone{i}");
            let _ = store
                .insert_payment(&payment(&format!("pay_g{i}"), "mch_a", &order, 2000 + i))
                .now_or_never();
            no_transaction_left_open(&store).await;
        }
        store
            .set_attempt_credential("mch_a", "pay_1", &p.out_trade_no, "kept", 3000)
            .await
            .unwrap();
        let after = store.payment("mch_a", "pay_1").await.unwrap().unwrap();
        assert_eq!(after.wechat_credential.as_deref(), Some("kept"));
        let attempts = store.payment_attempts("pay_1").await.unwrap();
        assert_eq!(attempts[0].wechat_credential.as_deref(), Some("kept"));
        let next = payment("pay_2", "mch_a", "order2", 3000);
        assert!(matches!(
            store.insert_payment(&next).await.unwrap(),
            InsertOutcome::Inserted(_)
        ));
        // Each dropped insert went in whole or not at all.
        for i in 0..20 {
            let id = format!("pay_g{i}");
            let there = store.payment("mch_a", &id).await.unwrap().is_some();
            let history = store.history(&id).await.unwrap().len();
            let attempts = store.payment_attempts(&id).await.unwrap().len();
            assert_eq!(
                (history, attempts),
                if there { (1, 1) } else { (0, 0) },
                "{id}"
            );
        }
    }

    /// On an SQLite file, commits leave the log to `checkpoint` (up to the backstop of 10,000
    /// pages): after 100 creates it holds every page they wrote, and the checkpoint copies all
    /// of them. PostgreSQL has nothing to copy.
    pub async fn the_log_is_copied_into_the_database_by_the_checkpoint(store: Store) {
        store.insert_merchant(&merchant("mch_a")).await.unwrap();
        for i in 0..100 {
            let p = payment(&format!("pay_{i}"), "mch_a", &format!("order{i}"), 1000 + i);
            store.insert_payment(&p).await.unwrap();
        }
        let Some(first) = store.checkpoint().await.unwrap() else {
            assert_eq!(store.backend(), Backend::Postgres);
            return;
        };
        // SQLite's own default would have copied the log at 1,000 pages and started it again.
        assert!(first.log > 1000, "the commits copied the log: {first:?}");
        assert_eq!(first.copied, first.log, "no reader holds an older state");
        let p = payment("pay_last", "mch_a", "order_last", 5000);
        store.insert_payment(&p).await.unwrap();
        let next = store.checkpoint().await.unwrap().expect("the same file");
        assert!(next.copied > 0 && next.copied == next.log, "{next:?}");
        assert!(store.payment("mch_a", "pay_last").await.unwrap().is_some());
    }

    /// A commit lands while almost every checkpoint of a busy log copies it, so the log would
    /// not start over by itself. Once it holds `LOG_START_OVER_PAGES`, the checkpoint ends
    /// with the writer's turn held, and the commit after it starts the log over.
    pub async fn a_log_written_to_without_pause_still_starts_over(store: Store) {
        use std::sync::atomic::{AtomicBool, Ordering};
        store.insert_merchant(&merchant("mch_a")).await.unwrap();
        if store.checkpoint().await.unwrap().is_none() {
            assert_eq!(store.backend(), Backend::Postgres);
            return;
        }
        let writing = Arc::new(AtomicBool::new(true));
        let writer = tokio::spawn({
            let (store, writing) = (store.clone(), writing.clone());
            async move {
                let mut i = 0;
                while writing.load(Ordering::Relaxed) {
                    let order = format!("order{i}");
                    let p = payment(&format!("pay_{i}"), "mch_a", &order, i);
                    store.insert_payment(&p).await.unwrap();
                    i += 1;
                }
            }
        });
        let mut full = None;
        for _ in 0..1_000_000 {
            let copied = store.checkpoint().await.unwrap().expect("a file");
            if copied.log >= LOG_START_OVER_PAGES {
                full = Some(copied);
                break;
            }
        }
        let full = full.expect("the log grew");
        let next = store.checkpoint().await.unwrap().expect("a file");
        writing.store(false, Ordering::Relaxed);
        writer.await.unwrap();
        assert!(
            next.log < full.log,
            "the log went on: {full:?}, then {next:?}"
        );
    }

    /// On SQLite's one writer connection, a transaction can be started: none is open. (Its
    /// statements run in the order sent, so this follows whatever a dropped write sent.)
    async fn no_transaction_left_open(store: &Store) {
        if store.backend() == Backend::Sqlite {
            store.execute_raw("BEGIN").await.unwrap();
            store.execute_raw("ROLLBACK").await.unwrap();
        }
    }

    /// Payments by status and integration as `/metrics` reads them (the counts the writes
    /// keep), checked against a count of the rows themselves.
    pub async fn counts_agree(store: &Store) -> Vec<(String, String, i64)> {
        let kept = store.ops_snapshot(0).await.unwrap().payments;
        let counted = store.payment_counts_from_rows().await.unwrap();
        assert_eq!(kept, counted, "the counts kept are the rows' counts");
        kept
    }

    pub fn payment(id: &str, merchant_id: &str, order: &str, created_at: i64) -> PaymentRow {
        PaymentRow {
            id: id.into(),
            merchant_id: merchant_id.into(),
            merchant_order_id: order.into(),
            out_trade_no: format!("wxg{order}"),
            amount: 100,
            currency: "CNY".into(),
            description: "thing".into(),
            integration: wxgate_domain::PaymentIntegration::Product(
                wxgate_domain::Integration::Native,
            ),
            status: PaymentStatus::Pending,
            version: 1,
            fingerprint: "f".into(),
            payer_openid: None,
            client_ip: None,
            return_url: None,
            cancel_url: None,
            attach: None,
            metadata: "{}".into(),
            wechat_credential: None,
            transaction_id: None,
            paid_at: None,
            expires_at: created_at + 7_200_000,
            created_at,
            updated_at: created_at,
            sync_due_at: Some(created_at + 5_000),
            sync_attempts: 0,
            claimed_until: None,
            notify_url: None,
            amount_refunded: 0,
            amount_reserved: 0,
            refund_count: 0,
            checkout_token: None,
            hosted_url: None,
            checkout_kind: None,
            payment_link_id: None,
            payer_amount: None,
            payer_currency: None,
            exchange_rate: None,
            door: None,
        }
    }

    fn render(p: &PaymentRow) -> (String, String) {
        (
            format!("evt_{}_{}", p.id, p.version),
            format!("{{\"status\":\"{}\"}}", p.status),
        )
    }

    fn paid(now: i64) -> TransitionFacts {
        TransitionFacts {
            now,
            source: "callback".into(),
            transaction_id: Some("4200".into()),
            paid_at: Some(now),
            out_trade_no: None,
            payer: None,
            closed_order: None,
        }
    }

    /// Each background claim (payments, refunds, payouts, webhook deliveries) reads the index
    /// of its open rows by due time, on a new database whose tables have no statistics yet:
    /// neither a scan of every row nor an index of every row's due time.
    pub async fn each_claim_reads_the_index_of_its_open_rows(store: Store) {
        let plans = store.claim_plans_for_test().await.unwrap();
        let indexes = [
            "payments_pending_sync_due",
            "refunds_open_sync_due",
            "payouts_open_sync_due",
            "webhook_deliveries_pending_due",
            "webhook_deliveries_pending_due",
            "webhook_deliveries_pending_due",
        ];
        for (plan, index) in plans.iter().zip(indexes) {
            assert!(plan.contains(index), "{index}: {plan}");
            // PostgreSQL's and SQLite's words for reading every row of a table.
            assert!(
                !plan.contains("Seq Scan") && !plan.contains("SCAN "),
                "{plan}"
            );
        }
    }

    /// The sweep of orders paid payments left open reads the open attempts by their index,
    /// never every attempt ever made.
    pub async fn the_sweep_of_orders_left_open_reads_the_open_attempts_index(store: Store) {
        let plan = store.left_open_plan_for_test().await.unwrap();
        assert!(plan.contains("payment_attempts_open"), "{plan}");
        // Payments are read by their key, for the open attempts only.
        assert!(
            !plan.contains("SCAN payments") && !plan.contains("Seq Scan on payments"),
            "{plan}"
        );
    }

    /// Lookups of one row use the index of the key they are given (an id, the attempt's
    /// primary key), on a new database too: never a merchant's index such as
    /// `(merchant_id, created_at)`, which would read every row of the merchant once the table
    /// fills.
    pub async fn each_lookup_reads_its_row_by_its_key(store: Store) {
        let plans = store.lookup_plans_for_test().await.unwrap();
        // Each lookup's index, as PostgreSQL and SQLite name it.
        let by_id = |table: &str| {
            [
                format!("{table}_pkey"),
                format!("sqlite_autoindex_{table}_1 (id=?)"),
            ]
        };
        let attempt = [
            "payment_attempts_pkey".to_string(),
            "sqlite_autoindex_payment_attempts_1 (merchant_id=? AND out_trade_no=?)".to_string(),
        ];
        let mut expected = vec![by_id("payments"), attempt, by_id("payments")];
        expected.extend(
            wxgate_store::testing::BY_ID
                .iter()
                .map(|(table, _)| by_id(table)),
        );
        assert_eq!(plans.len(), expected.len());
        for (plan, index) in plans.iter().zip(expected) {
            assert!(index.iter().any(|i| plan.contains(i)), "{index:?}: {plan}");
            assert!(!plan.contains("_merchant"), "{plan}");
        }
    }

    pub async fn migrations_are_current(store: Store) {
        assert_eq!(store.schema_status().await.unwrap(), SchemaStatus::UpToDate);
        store.migrate().await.unwrap();
        assert_eq!(
            store.schema_status().await.unwrap(),
            SchemaStatus::UpToDate,
            "migrate twice is harmless"
        );
    }

    pub async fn payments_made_before_their_counts_are_counted_by_the_migration(store: Store) {
        store.insert_merchant(&merchant("mch_a")).await.unwrap();
        for i in 0..3 {
            let (id, order) = (format!("pay_{i}"), format!("o{i}"));
            let p = payment(&id, "mch_a", &order, 1000);
            store.insert_payment(&p).await.unwrap();
        }
        store
            .transition("mch_a", "pay_0", PaymentEvent::Paid, &paid(2000), render)
            .await
            .unwrap();
        store.drop_table_for_test("payment_counts").await.unwrap();
        store.forget_migration_for_test(18).await.unwrap();
        store.migrate().await.unwrap();
        assert_eq!(
            counts_agree(&store).await,
            [
                ("pending".to_string(), "native".to_string(), 2),
                ("succeeded".to_string(), "native".to_string(), 1)
            ]
        );
    }

    pub async fn door_tokens_live_until_they_expire(store: Store) {
        store.insert_merchant(&merchant("mch_t")).await.unwrap();
        store
            .insert_door_token("h1", "connect", "mch_t", (0, 100))
            .await
            .unwrap();
        store
            .insert_door_token("h2", "connect", "mch_t", (0, 200))
            .await
            .unwrap();
        let found = |hash: &'static str, door: &'static str, now: i64| {
            let store = store.clone();
            async move { store.door_token_merchant(door, hash, now).await.unwrap() }
        };
        assert_eq!(found("h1", "connect", 99).await.as_deref(), Some("mch_t"));
        assert_eq!(
            found("h1", "open_api", 99).await,
            None,
            "a token is its door's only"
        );
        assert_eq!(found("h1", "connect", 100).await, None, "expired");
        assert_eq!(store.purge_expired_door_tokens(150).await.unwrap(), 1);
        assert_eq!(found("h2", "connect", 150).await.as_deref(), Some("mch_t"));
        // Revoking a credential ends it and the merchant's tokens of its door, nothing else.
        let credential = |door: &str, key_id: &str| DoorCredentialRow {
            door: door.into(),
            key_id: key_id.into(),
            merchant_id: "mch_t".into(),
            secret_sealed: "sealed".into(),
            created_at: 0,
            revoked_at: None,
        };
        store
            .insert_door_credential(&credential("connect", "k1"))
            .await
            .unwrap();
        store
            .insert_door_credential(&credential("connect", "k2"))
            .await
            .unwrap();
        store
            .insert_door_token("h3", "open_api", "mch_t", (0, 500))
            .await
            .unwrap();
        assert!(
            store
                .revoke_door_credential("connect", "k1", 160)
                .await
                .unwrap()
        );
        assert!(
            !store
                .revoke_door_credential("connect", "k1", 161)
                .await
                .unwrap(),
            "once"
        );
        assert!(
            store
                .door_credential("connect", "k1")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .door_credential("connect", "k2")
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(
            found("h2", "connect", 160).await,
            None,
            "its door's tokens end"
        );
        assert_eq!(found("h3", "open_api", 160).await.as_deref(), Some("mch_t"));
    }

    pub async fn merchants_and_api_keys(store: Store) {
        store.insert_merchant(&merchant("mch_a")).await.unwrap();
        assert_eq!(
            store.merchant("mch_a").await.unwrap(),
            Some(merchant("mch_a"))
        );
        assert_eq!(store.merchants().await.unwrap().len(), 1);
        store
            .insert_api_key("key_1", "mch_a", "hash1", 5)
            .await
            .unwrap();
        assert_eq!(
            store
                .merchant_for_key_hash("hash1")
                .await
                .unwrap()
                .as_deref(),
            Some("mch_a")
        );
        assert_eq!(store.merchant_for_key_hash("nope").await.unwrap(), None);
        assert!(store.revoke_api_key("key_1", 6).await.unwrap());
        assert!(!store.revoke_api_key("key_1", 7).await.unwrap());
        assert_eq!(store.merchant_for_key_hash("hash1").await.unwrap(), None);
    }

    pub async fn payments_are_unique_per_merchant_order_id(store: Store) {
        store.insert_merchant(&merchant("mch_a")).await.unwrap();
        store.insert_merchant(&merchant("mch_b")).await.unwrap();
        let p = payment("pay_1", "mch_a", "order1", 1000);
        // The insert answers with exactly the detail it wrote.
        let InsertOutcome::Inserted(detail) = store.insert_payment(&p).await.unwrap() else {
            panic!("pay_1 is new");
        };
        assert_eq!(
            detail.attempts,
            store.payment_attempts("pay_1").await.unwrap()
        );
        assert_eq!(detail.history, store.history("pay_1").await.unwrap());
        let again = payment("pay_2", "mch_a", "order1", 2000);
        assert_eq!(
            store.insert_payment(&again).await.unwrap(),
            InsertOutcome::Existing(Box::new(p.clone()))
        );
        // Nothing of the payment that did not go in: no order, no history.
        assert!(store.payment_attempts("pay_2").await.unwrap().is_empty());
        assert!(store.history("pay_2").await.unwrap().is_empty());
        assert_eq!(store.payment_attempts("pay_1").await.unwrap().len(), 1);
        assert_eq!(store.history("pay_1").await.unwrap().len(), 1);
        assert!(matches!(
            store
                .insert_payment(&payment("pay_3", "mch_b", "order1", 1000))
                .await
                .unwrap(),
            InsertOutcome::Inserted(_)
        ));
        assert_eq!(
            store.payment("mch_a", "pay_1").await.unwrap(),
            Some(p.clone())
        );
        assert_eq!(
            store.payment("mch_b", "pay_1").await.unwrap(),
            None,
            "merchants never see each other's payments"
        );
        assert!(
            store
                .payment_detail("mch_b", "pay_1")
                .await
                .unwrap()
                .is_none(),
            "nor their details"
        );
        assert_eq!(
            store.payment_by_order_id("mch_a", "order1").await.unwrap(),
            Some(p.clone())
        );
        assert_eq!(
            store
                .payment_by_out_trade_no("mch_a", "wxgorder1")
                .await
                .unwrap(),
            Some(p)
        );
        let history = store.history("pay_1").await.unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].status, PaymentStatus::Pending);
        // Counted once each; the payment that did not go in, not at all.
        assert_eq!(
            counts_agree(&store).await,
            [("pending".to_string(), "native".to_string(), 2)]
        );
    }

    pub async fn transitions_write_history_and_outbox_once(store: Store) {
        store.insert_merchant(&merchant("mch_a")).await.unwrap();
        for (id, order) in [("pay_1", "o1"), ("pay_2", "o2")] {
            store
                .insert_payment(&payment(id, "mch_a", order, 1000))
                .await
                .unwrap();
        }
        let out = store
            .transition("mch_a", "pay_1", PaymentEvent::Paid, &paid(2000), render)
            .await
            .unwrap();
        let TransitionOutcome::Changed { from, payment } = out else {
            panic!("{out:?}")
        };
        assert_eq!(
            (from, payment.status.as_str(), payment.version),
            (PaymentStatus::Pending, "succeeded", 2)
        );
        assert_eq!(payment.transaction_id.as_deref(), Some("4200"));
        assert_eq!(payment.sync_due_at, None, "no sync once terminal");
        // A duplicate changes nothing; an impossible event is refused.
        let dup = store
            .transition("mch_a", "pay_1", PaymentEvent::Paid, &paid(3000), render)
            .await
            .unwrap();
        assert!(matches!(dup, TransitionOutcome::Unchanged(_)));
        assert!(
            store
                .transition(
                    "mch_a",
                    "pay_1",
                    PaymentEvent::Cancelled,
                    &paid(3000),
                    render
                )
                .await
                .is_err()
        );
        let events = store.events_for("mch_a", "pay_1").await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].event_type.as_str(), events[0].object_version),
            ("payment.succeeded", 2)
        );
        assert_eq!(events[0].payload, "{\"status\":\"succeeded\"}");
        let history: Vec<String> = store
            .history("pay_1")
            .await
            .unwrap()
            .into_iter()
            .map(|h| h.status.as_str().to_string())
            .collect();
        assert_eq!(history, ["pending", "succeeded"]);
        assert!(matches!(
            store
                .transition("mch_b", "pay_1", PaymentEvent::Paid, &paid(1), render)
                .await,
            Err(StoreError::PaymentNotFound(_))
        ));
        // From a row read before the payment was paid: the stale row is found out, and each
        // answer is decided on the payment as it is now.
        let stale = store.payment("mch_a", "pay_2").await.unwrap().unwrap();
        let first = store
            .transition_from(stale.clone(), PaymentEvent::Paid, &paid(2000), render)
            .await
            .unwrap();
        assert!(
            matches!(first, TransitionOutcome::Changed { .. }),
            "{first:?}"
        );
        let again = store
            .transition_from(stale.clone(), PaymentEvent::Paid, &paid(3000), render)
            .await
            .unwrap();
        let TransitionOutcome::Unchanged(now) = again else {
            panic!("{again:?}")
        };
        assert_eq!((now.status, now.version), (PaymentStatus::Succeeded, 2));
        let cancelled = store
            .transition_from(stale.clone(), PaymentEvent::Cancelled, &paid(3500), render)
            .await;
        assert!(
            cancelled.is_err(),
            "a paid payment cannot be cancelled: {cancelled:?}"
        );
        let refunded = store
            .transition_from(stale, PaymentEvent::FullyRefunded, &paid(4000), render)
            .await
            .unwrap();
        assert!(
            matches!(&refunded, TransitionOutcome::Changed { payment, .. } if payment.status == PaymentStatus::Refunded),
            "a stale pending row does not refuse what the paid payment may take: {refunded:?}"
        );
        assert_eq!(store.events_for("mch_a", "pay_2").await.unwrap().len(), 2);
    }

    pub async fn a_payment_ends_unpaid_only_while_its_closed_order_is_current(store: Store) {
        store.insert_merchant(&merchant("mch_a")).await.unwrap();
        let p = payment("pay_1", "mch_a", "o1", 1000);
        store.insert_payment(&p).await.unwrap();
        // A cancel closed the order it read; the payer started another meanwhile.
        let native = wxgate_domain::Integration::Native;
        let started = store.start_attempt(&p, native, 1500, 6500).await.unwrap();
        assert!(matches!(started, AttemptStart::Started(_)));
        let closed = |order: &str| TransitionFacts {
            now: 2000,
            source: "close".into(),
            closed_order: Some(order.to_string()),
            ..TransitionFacts::default()
        };
        let event = PaymentEvent::Cancelled;
        let kept = store
            .transition_from(p.clone(), event, &closed(&p.out_trade_no), render)
            .await
            .unwrap();
        let TransitionOutcome::Unchanged(now) = kept else {
            panic!("a payment with an order still open ended: {kept:?}");
        };
        assert_eq!(now.status, PaymentStatus::Pending);
        let attempts = store.payment_attempts("pay_1").await.unwrap();
        assert!(attempts.iter().all(|a| a.status.as_str() == "open"));
        // Its new order closed too, it ends.
        let ended = store
            .transition_from(now.clone(), event, &closed(&now.out_trade_no), render)
            .await
            .unwrap();
        assert!(
            matches!(ended, TransitionOutcome::Changed { .. }),
            "{ended:?}"
        );
    }

    pub async fn concurrent_transitions_apply_once(store: Store) {
        store.insert_merchant(&merchant("mch_a")).await.unwrap();
        store
            .insert_payment(&payment("pay_1", "mch_a", "o1", 1000))
            .await
            .unwrap();
        let store = Arc::new(store);
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let store = store.clone();
                let event = if i % 2 == 0 {
                    PaymentEvent::Paid
                } else {
                    PaymentEvent::Cancelled
                };
                tokio::spawn(async move {
                    store
                        .transition("mch_a", "pay_1", event, &paid(2000 + i), render)
                        .await
                })
            })
            .collect();
        let mut changed = 0;
        for t in tasks {
            if let Ok(TransitionOutcome::Changed {
                from: PaymentStatus::Pending,
                ..
            }) = t.await.unwrap()
            {
                changed += 1;
            }
        }
        assert_eq!(changed, 1, "exactly one transition leaves pending");
        let events = store.events_for("mch_a", "pay_1").await.unwrap();
        let history = store.history("pay_1").await.unwrap();
        // A cancelled payment may later turn paid_after_close; nothing else can happen.
        assert!(
            events.len() == 1
                || (events.len() == 2 && events[1].event_type == "payment.paid_after_close"),
            "{events:?}"
        );
        assert_eq!(history.len(), events.len() + 1);
        // Many payments at once (on SQLite, committed in groups): each moves once, with its
        // event, history and posting, and twice-sent events change nothing.
        for i in 0..24 {
            let (id, order) = (format!("pay_m{i}"), format!("om{i}"));
            store
                .insert_payment(&payment(&id, "mch_a", &order, 1000))
                .await
                .unwrap();
        }
        let tasks: Vec<_> = (0..48)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let id = format!("pay_m{}", i % 24);
                    let facts = paid(3000 + i);
                    store
                        .transition("mch_a", &id, PaymentEvent::Paid, &facts, render)
                        .await
                })
            })
            .collect();
        let mut changed = 0;
        for t in tasks {
            match t.await.unwrap().unwrap() {
                TransitionOutcome::Changed { .. } => changed += 1,
                TransitionOutcome::Unchanged(p) => assert_eq!(p.status, PaymentStatus::Succeeded),
            }
        }
        assert_eq!(changed, 24, "each payment moved once");
        for i in 0..24 {
            let id = format!("pay_m{i}");
            assert_eq!(store.events_for("mch_a", &id).await.unwrap().len(), 1);
            assert_eq!(store.history(&id).await.unwrap().len(), 2);
        }
        // Every move counted once, the lost races not at all.
        let counts = counts_agree(&store).await;
        let succeeded: i64 = counts
            .iter()
            .filter(|(status, _, _)| status == "succeeded")
            .map(|(_, _, n)| n)
            .sum();
        assert!((24..=25).contains(&succeeded), "{counts:?}");
        assert_eq!(counts.iter().map(|(_, _, n)| n).sum::<i64>(), 25);
        assert_eq!(
            store.ledger_violations().await.unwrap(),
            Vec::<String>::new()
        );
    }

    pub async fn listing_filters_and_pages(store: Store) {
        store.insert_merchant(&merchant("mch_a")).await.unwrap();
        for i in 0..5 {
            store
                .insert_payment(&payment(
                    &format!("pay_{i}"),
                    "mch_a",
                    &format!("o{i}"),
                    1000 + i,
                ))
                .await
                .unwrap();
        }
        store
            .transition("mch_a", "pay_3", PaymentEvent::Paid, &paid(5000), render)
            .await
            .unwrap();
        let all = PaymentFilter {
            limit: 10,
            ..Default::default()
        };
        let ids = |rows: Vec<PaymentRow>| rows.into_iter().map(|p| p.id).collect::<Vec<_>>();
        assert_eq!(
            ids(store.list_payments("mch_a", &all).await.unwrap()),
            ["pay_4", "pay_3", "pay_2", "pay_1", "pay_0"]
        );
        let page = PaymentFilter {
            limit: 2,
            before: Some((1003, "pay_3".into())),
            ..Default::default()
        };
        assert_eq!(
            ids(store.list_payments("mch_a", &page).await.unwrap()),
            ["pay_2", "pay_1"]
        );
        let succeeded = PaymentFilter {
            limit: 10,
            status: Some(PaymentStatus::Succeeded),
            ..Default::default()
        };
        assert_eq!(
            ids(store.list_payments("mch_a", &succeeded).await.unwrap()),
            ["pay_3"]
        );
        let range = PaymentFilter {
            limit: 10,
            created_gte: Some(1001),
            created_lt: Some(1003),
            ..Default::default()
        };
        assert_eq!(
            ids(store.list_payments("mch_a", &range).await.unwrap()),
            ["pay_2", "pay_1"]
        );
    }

    pub async fn sync_work_is_claimed_once(store: Store) {
        store.insert_merchant(&merchant("mch_a")).await.unwrap();
        for i in 0..6 {
            store
                .insert_payment(&payment(
                    &format!("pay_{i}"),
                    "mch_a",
                    &format!("o{i}"),
                    1000,
                ))
                .await
                .unwrap();
        }
        // Due at 6000. Two claimers at once take disjoint sets.
        let store = Arc::new(store);
        let a = {
            let s = store.clone();
            tokio::spawn(async move { s.claim_due_syncs(10_000, 4).await.unwrap() })
        };
        let b = {
            let s = store.clone();
            tokio::spawn(async move { s.claim_due_syncs(10_000, 4).await.unwrap() })
        };
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        let mut ids: Vec<String> = a.iter().chain(b.iter()).map(|p| p.id.clone()).collect();
        ids.sort();
        let before = ids.len();
        ids.dedup();
        assert_eq!(before, ids.len(), "no payment claimed twice");
        assert_eq!(ids.len(), 6);
        assert!(
            store.claim_due_syncs(10_001, 10).await.unwrap().is_empty(),
            "claimed rows are leased"
        );
        // After the lease runs out, a node that died mid-work leaves the row to be claimed again.
        assert_eq!(
            store
                .claim_due_syncs(10_000 + CLAIM_LEASE_MS + 1, 10)
                .await
                .unwrap()
                .len(),
            6
        );
        store
            .reschedule_sync("pay_0", Some(200_000), 1)
            .await
            .unwrap();
        store.reschedule_sync("pay_1", None, 1).await.unwrap();
        // pay_0 is due again later; pay_1 has nothing more to do; the rest were never released,
        // so their lease runs out and they come back.
        let mut later: Vec<String> = store
            .claim_due_syncs(300_000, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.id)
            .collect();
        later.sort();
        assert_eq!(later, ["pay_0", "pay_2", "pay_3", "pay_4", "pay_5"]);
        // A payment that leaves pending is never claimed again, even if a worker that still held
        // it reschedules it afterwards.
        store
            .transition("mch_a", "pay_2", PaymentEvent::Paid, &paid(300_001), render)
            .await
            .unwrap();
        store
            .reschedule_sync("pay_2", Some(300_002), 2)
            .await
            .unwrap();
        let after: Vec<String> = store
            .claim_due_syncs(10_000_000, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.id)
            .collect();
        assert!(!after.contains(&"pay_2".to_string()), "{after:?}");
        assert!(store.claim_due_syncs(150_000, 10).await.unwrap().is_empty());
    }

    pub async fn idempotency_keys(store: Store) {
        store.insert_merchant(&merchant("mch_a")).await.unwrap();
        assert_eq!(
            store
                .begin_idempotent("mch_a", "k1", "h1", 1)
                .await
                .unwrap(),
            IdempotencyStart::Started
        );
        assert_eq!(
            store
                .begin_idempotent("mch_a", "k1", "h1", 2)
                .await
                .unwrap(),
            IdempotencyStart::InProgress
        );
        assert_eq!(
            store
                .begin_idempotent("mch_a", "k1", "h2", 2)
                .await
                .unwrap(),
            IdempotencyStart::Mismatch
        );
        store
            .finish_idempotent("mch_a", "k1", 201, "{\"id\":1}")
            .await
            .unwrap();
        assert_eq!(
            store
                .begin_idempotent("mch_a", "k1", "h1", 3)
                .await
                .unwrap(),
            IdempotencyStart::Replay {
                status: 201,
                body: "{\"id\":1}".into()
            }
        );
        assert_eq!(
            store
                .begin_idempotent("mch_a", "k2", "h1", 1)
                .await
                .unwrap(),
            IdempotencyStart::Started
        );
        store.abandon_idempotent("mch_a", "k2").await.unwrap();
        // A key whose first request never finished is taken over after the lock time.
        assert_eq!(
            store
                .begin_idempotent("mch_a", "k3", "h3", 1_000)
                .await
                .unwrap(),
            IdempotencyStart::Started
        );
        assert_eq!(
            store
                .begin_idempotent("mch_a", "k3", "h3", 1_000 + IDEMPOTENCY_LOCK_MS)
                .await
                .unwrap(),
            IdempotencyStart::InProgress
        );
        assert_eq!(
            store
                .begin_idempotent("mch_a", "k3", "h3", 1_001 + IDEMPOTENCY_LOCK_MS)
                .await
                .unwrap(),
            IdempotencyStart::Started
        );
        assert_eq!(
            store
                .begin_idempotent("mch_a", "k3", "other", 2_000_000)
                .await
                .unwrap(),
            IdempotencyStart::Mismatch
        );
        assert_eq!(
            store
                .begin_idempotent("mch_a", "k2", "h9", 1)
                .await
                .unwrap(),
            IdempotencyStart::Started
        );
    }

    pub async fn old_idempotency_keys_are_forgotten(store: Store) {
        store.insert_merchant(&merchant("mch_a")).await.unwrap();
        for (key, at) in [("k1", 1), ("k2", 1), ("k3", 61_001)] {
            store
                .begin_idempotent("mch_a", key, "h1", at)
                .await
                .unwrap();
        }
        // Keys are forgotten by age, a batch at a time; a forgotten key starts afresh.
        for i in 0..3 {
            let key = format!("late{i}");
            store
                .begin_idempotent("mch_a", &key, "h", 3_000_000)
                .await
                .unwrap();
        }
        assert_eq!(store.purge_idempotency_keys(3_000_000).await.unwrap(), 3);
        assert_eq!(store.purge_idempotency_keys(3_000_000).await.unwrap(), 0);
        assert_eq!(
            store
                .begin_idempotent("mch_a", "k1", "h2", 3_000_001)
                .await
                .unwrap(),
            IdempotencyStart::Started,
            "k1 was forgotten, so another request may use it"
        );
        assert_eq!(
            store
                .begin_idempotent("mch_a", "late0", "other", 3_000_001)
                .await
                .unwrap(),
            IdempotencyStart::Mismatch,
            "a newer key is kept"
        );
    }

    fn refund(id: &str, payment_id: &str, amount: i64, now: i64) -> RefundRow {
        RefundRow {
            id: id.into(),
            merchant_id: "mch_a".into(),
            payment_id: payment_id.into(),
            merchant_refund_id: format!("m{id}"),
            out_refund_no: id.into(),
            amount,
            currency: "CNY".into(),
            reason: None,
            status: wxgate_domain::refund::RefundStatus::Pending,
            version: 1,
            fingerprint: "f".into(),
            submitted: Flag::NO,
            wechat_refund_id: None,
            last_error: None,
            created_at: now,
            updated_at: now,
            succeeded_at: None,
            sync_due_at: Some(now + 5_000),
            sync_attempts: 0,
            claimed_until: None,
            attempt_out_trade_no: None,
        }
    }

    fn render_refund(r: &RefundRow) -> (String, String) {
        (
            format!("evt_{}_{}", r.id, r.version),
            format!("{{\"status\":\"{}\"}}", r.status),
        )
    }

    /// A merchant with one paid payment of 100.
    async fn paid_payment(store: &Store) {
        store.insert_merchant(&merchant("mch_a")).await.unwrap();
        store
            .insert_payment(&payment("pay_1", "mch_a", "o1", 1000))
            .await
            .unwrap();
        store
            .transition("mch_a", "pay_1", PaymentEvent::Paid, &paid(2000), render)
            .await
            .unwrap();
    }

    /// The mark of an order paid twice and the refund that returns its money commit together,
    /// once: no order is ever marked without its refund.
    pub async fn an_order_paid_twice_is_marked_with_its_refund(store: Store) {
        store.insert_merchant(&merchant("mch_a")).await.unwrap();
        let p = payment("pay_1", "mch_a", "o1", 1000);
        store.insert_payment(&p).await.unwrap();
        let AttemptStart::Started(second) = store
            .start_attempt(&p, wxgate_domain::Integration::Native, 1500, 6500)
            .await
            .unwrap()
        else {
            panic!("a second order for a pending payment");
        };
        store
            .transition("mch_a", "pay_1", PaymentEvent::Paid, &paid(2000), render)
            .await
            .unwrap();
        let mut dup = refund("re_dup", "pay_1", 100, 2500);
        dup.merchant_refund_id = format!("dup_{}", second.out_trade_no);
        dup.attempt_out_trade_no = Some(second.out_trade_no.clone());
        let event = || ("evt_dup".to_string(), "{}".to_string());
        assert!(
            store
                .mark_duplicate(&second, "4201", 2500, event(), &dup)
                .await
                .unwrap()
        );
        let written = store
            .refund_by_merchant_refund_id("mch_a", &dup.merchant_refund_id)
            .await
            .unwrap()
            .expect("the refund is written with the mark");
        assert_eq!((written.id.as_str(), written.amount), ("re_dup", 100));
        // Found again: nothing more is written.
        let mut again = dup.clone();
        again.id = "re_dup_2".into();
        assert!(
            !store
                .mark_duplicate(&second, "4201", 2600, event(), &again)
                .await
                .unwrap()
        );
        assert_eq!(
            store
                .refunds_for_payment("mch_a", "pay_1")
                .await
                .unwrap()
                .len(),
            1
        );
        let p = store.payment("mch_a", "pay_1").await.unwrap().unwrap();
        assert_eq!(
            p.amount_reserved, 0,
            "a twice-paid order's refund is outside the payment's sums"
        );
        assert!(store.ledger_violations().await.unwrap().is_empty());
    }

    pub async fn concurrent_refunds_never_reserve_more_than_was_paid(store: Store) {
        paid_payment(&store).await;
        let store = Arc::new(store);
        // Twenty refunds of 15 against 100 paid: six fit.
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .reserve_refund(&refund(&format!("re_{i}"), "pay_1", 15, 3000))
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut reserved = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                ReserveOutcome::Reserved(r) => reserved.push(r.id),
                ReserveOutcome::Refused(p) => assert!(p.amount_reserved + 15 > p.amount),
                ReserveOutcome::Existing(r) => panic!("unexpected existing {r:?}"),
            }
        }
        assert_eq!(reserved.len(), 6);
        let p = store.payment("mch_a", "pay_1").await.unwrap().unwrap();
        assert_eq!((p.amount_reserved, p.refund_count), (90, 6));
        assert_eq!(
            store
                .refunds_for_payment("mch_a", "pay_1")
                .await
                .unwrap()
                .len(),
            6
        );
        // The same merchant_refund_id is the existing refund, not a second one.
        let again = store
            .reserve_refund(&refund(&reserved[0], "pay_1", 15, 3000))
            .await
            .unwrap();
        assert!(matches!(again, ReserveOutcome::Existing(_)), "{again:?}");
    }

    /// refunded ≤ reserved ≤ amount is checked where a payment is written and read: a row that
    /// breaks it (here, written behind the store's back) is refused as corrupt, never served
    /// or built upon.
    pub async fn a_broken_money_invariant_is_refused_not_served(store: Store) {
        paid_payment(&store).await;
        assert!(store.payment("mch_a", "pay_1").await.unwrap().is_some());
        let over = PaymentRow {
            amount_reserved: 101,
            ..payment("pay_2", "mch_a", "order-2", 1000)
        };
        assert!(matches!(
            store.insert_payment(&over).await,
            Err(StoreError::Corrupt(_))
        ));
        store
            .execute_raw(
                "UPDATE payments SET amount_refunded = 50, amount_reserved = 40 WHERE id = 'pay_1'",
            )
            .await
            .unwrap();
        assert!(matches!(
            store.payment("mch_a", "pay_1").await,
            Err(StoreError::Corrupt(_))
        ));
    }

    /// Reconciliation reads a day's refunds by when WeChat took them (its bill's day), not by
    /// when they were made here: a refund sent again later falls in the later day.
    pub async fn refunds_fall_in_the_day_wechat_took_them(store: Store) {
        paid_payment(&store).await;
        for id in ["re_late", "re_done", "re_never"] {
            let outcome = store
                .reserve_refund(&refund(id, "pay_1", 10, 3000))
                .await
                .unwrap();
            assert!(matches!(outcome, ReserveOutcome::Reserved(_)));
        }
        let taken = |now| RefundNote {
            submitted: true,
            now,
            ..Default::default()
        };
        store
            .note_refund_attempt("re_late", &taken(9000))
            .await
            .unwrap();
        // Taken once: a later note does not move it.
        store
            .note_refund_attempt("re_late", &taken(12_000))
            .await
            .unwrap();
        let facts = RefundFacts {
            now: 5000,
            ..Default::default()
        };
        let event = wxgate_domain::refund::RefundEvent::Succeeded;
        store
            .refund_transition("mch_a", "re_done", event, &facts, render_refund, render)
            .await
            .unwrap();
        let day = |from, to| {
            let store = store.clone();
            async move {
                let rows = store.refunds_made_between("mch_a", from, to).await.unwrap();
                rows.into_iter().map(|r| r.id).collect::<Vec<_>>()
            }
        };
        assert!(day(0, 4000).await.is_empty(), "made then, taken later");
        assert_eq!(day(4000, 6000).await, ["re_done"]);
        assert_eq!(day(8000, 10_000).await, ["re_late"]);
        assert!(day(10_000, 20_000).await.is_empty());
    }

    pub async fn refund_outcomes_move_the_payments_sums(store: Store) {
        paid_payment(&store).await;
        for (id, amount) in [("re_a", 60), ("re_b", 30), ("re_c", 10)] {
            let outcome = store
                .reserve_refund(&refund(id, "pay_1", amount, 3000))
                .await
                .unwrap();
            assert!(matches!(outcome, ReserveOutcome::Reserved(_)));
        }
        let facts = RefundFacts {
            now: 4000,
            ..Default::default()
        };
        use wxgate_domain::refund::RefundEvent;
        let apply = |id: &'static str, event| {
            let store = store.clone();
            let facts = facts.clone();
            async move {
                store
                    .refund_transition("mch_a", id, event, &facts, render_refund, render)
                    .await
                    .unwrap()
            }
        };
        // A failed refund frees its amount; a succeeded one counts as refunded.
        apply("re_c", RefundEvent::Closed).await;
        assert!(matches!(
            store
                .refund_transition(
                    "mch_a",
                    "re_c",
                    RefundEvent::Succeeded,
                    &facts,
                    render_refund,
                    render
                )
                .await,
            Err(StoreError::RefundTransition(_))
        ));
        apply("re_a", RefundEvent::Succeeded).await;
        let p = store.payment("mch_a", "pay_1").await.unwrap().unwrap();
        assert_eq!(
            (p.amount_reserved, p.amount_refunded, p.status.as_str()),
            (90, 60, "succeeded")
        );
        // Applying it again changes nothing.
        assert!(matches!(
            apply("re_a", RefundEvent::Succeeded).await,
            RefundTransitionOutcome::Unchanged(_)
        ));
        // Abnormal holds the amount; resolved, it succeeds.
        apply("re_b", RefundEvent::Abnormal).await;
        let p = store.payment("mch_a", "pay_1").await.unwrap().unwrap();
        assert_eq!((p.amount_reserved, p.amount_refunded), (90, 60));
        apply("re_b", RefundEvent::Succeeded).await;
        let p = store.payment("mch_a", "pay_1").await.unwrap().unwrap();
        assert_eq!(
            (p.amount_reserved, p.amount_refunded, p.status.as_str()),
            (90, 90, "succeeded")
        );
        // The rest, refunded: the payment becomes refunded, with its own event.
        assert!(matches!(
            store
                .reserve_refund(&refund("re_d", "pay_1", 10, 5000))
                .await
                .unwrap(),
            ReserveOutcome::Reserved(_)
        ));
        assert!(store.refund("mch_a", "re_d").await.unwrap().is_some());
        assert!(
            store.refund("mch_b", "re_d").await.unwrap().is_none(),
            "merchants never see each other's refunds"
        );
        match apply("re_d", RefundEvent::Succeeded).await {
            RefundTransitionOutcome::Changed { payment, refund } => {
                assert_eq!(
                    (payment.status.as_str(), payment.amount_refunded),
                    ("refunded", 100)
                );
                assert_eq!((refund.status.as_str(), refund.version), ("succeeded", 2));
            }
            other => panic!("{other:?}"),
        }
        let payment_events: Vec<String> = store
            .events_for("mch_a", "pay_1")
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event_type)
            .collect();
        assert_eq!(payment_events, ["payment.succeeded", "payment.refunded"]);
        let b_events: Vec<String> = store
            .events_for("mch_a", "re_b")
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event_type)
            .collect();
        assert_eq!(b_events, ["refund.abnormal", "refund.succeeded"]);
        // Nothing more can be reserved.
        assert!(matches!(
            store
                .reserve_refund(&refund("re_e", "pay_1", 1, 6000))
                .await
                .unwrap(),
            ReserveOutcome::Refused(_)
        ));
        assert_eq!(
            counts_agree(&store).await,
            [("refunded".to_string(), "native".to_string(), 1)]
        );
    }

    /// Old events are forgotten with their deliveries and attempts, unless a delivery of
    /// them is still pending; newer ones stay.
    pub async fn old_events_are_forgotten_with_their_delivery_logs(store: Store) {
        store.insert_merchant(&merchant("mch_a")).await.unwrap();
        let endpoint = WebhookEndpointRow {
            id: "we_all".into(),
            merchant_id: "mch_a".into(),
            url: "https://shop.example/all".into(),
            events: "*".into(),
            secret_id: "whs_all".into(),
            secret_sealed: "sealed".into(),
            created_at: 1,
            deleted_at: None,
        };
        assert!(store.insert_webhook_endpoint(&endpoint, 4).await.unwrap());
        for (id, at) in [("pay_1", 2000), ("pay_2", 2100), ("pay_3", 8000)] {
            store
                .insert_payment(&payment(id, "mch_a", id, at - 500))
                .await
                .unwrap();
            store
                .transition("mch_a", id, PaymentEvent::Paid, &paid(at), render)
                .await
                .unwrap();
        }
        let (delivered, retried) = ("evt_pay_1_2", "evt_pay_2_2");
        let claimed = store
            .claim_due_deliveries(2200, 1000, 10, &[])
            .await
            .unwrap();
        assert_eq!(claimed.len(), 2);
        for d in &claimed {
            let outcome = match d.event_id.as_str() {
                id if id == delivered => AttemptOutcome::Delivered,
                _ => AttemptOutcome::Retry { next_at: 9000 },
            };
            let attempt = AttemptRow {
                event_id: d.event_id.clone(),
                endpoint_id: d.endpoint_id.clone(),
                attempt: 1,
                at: 2300,
                status_code: Some(200),
                latency_ms: 5,
                error: None,
            };
            assert!(store.record_attempt(d, &attempt, outcome).await.unwrap());
        }
        let kept = |id: &'static str| {
            let store = store.clone();
            async move { store.event_by_id(id).await.unwrap().is_some() }
        };
        assert_eq!(store.forget_events("mch_a", 1000).await.unwrap(), 0);
        store.forget_events("mch_a", 5000).await.unwrap();
        assert!(!kept(delivered).await, "delivered and old: forgotten");
        assert!(store.deliveries(delivered).await.unwrap().is_empty());
        assert!(store.attempts(delivered, 100).await.unwrap().is_empty());
        assert!(kept(retried).await, "a pending delivery keeps its event");
        assert_eq!(store.attempts(retried, 100).await.unwrap().len(), 1);
        assert!(kept("evt_pay_3_2").await, "newer than the cut: kept");
        // Once its delivery ends (here dead), the old event goes too.
        let again = store
            .claim_due_deliveries(9000, 1000, 10, &[])
            .await
            .unwrap();
        let d = again.iter().find(|d| d.event_id == retried).unwrap();
        let attempt = AttemptRow {
            attempt: 2,
            at: 9000,
            status_code: Some(500),
            ..store.attempts(retried, 1).await.unwrap()[0].clone()
        };
        assert!(
            store
                .record_attempt(d, &attempt, AttemptOutcome::Dead)
                .await
                .unwrap()
        );
        store.forget_events("mch_a", 5000).await.unwrap();
        assert!(!kept(retried).await);
        assert!(store.attempts(retried, 100).await.unwrap().is_empty());
        assert!(kept("evt_pay_3_2").await);
    }

    pub async fn deliveries_fan_out_to_subscribed_endpoints_and_are_claimed_once(store: Store) {
        store.insert_merchant(&merchant("mch_a")).await.unwrap();
        let endpoint = |id: &str, events: &str| WebhookEndpointRow {
            id: id.into(),
            merchant_id: "mch_a".into(),
            url: format!("https://shop.example/{id}"),
            events: events.into(),
            secret_id: format!("whs_{id}"),
            secret_sealed: "sealed".into(),
            created_at: 1,
            deleted_at: None,
        };
        for e in [
            endpoint("we_all", "*"),
            endpoint("we_paid", "payment.succeeded"),
            endpoint("we_refunds", "refund.succeeded,refund.failed"),
            endpoint("we_gone", "*"),
        ] {
            assert!(store.insert_webhook_endpoint(&e, 4).await.unwrap());
        }
        // At most `max` live endpoints: a fifth is refused, and writes nothing.
        let fifth = endpoint("we_fifth", "*");
        assert!(!store.insert_webhook_endpoint(&fifth, 4).await.unwrap());
        assert!(
            store
                .delete_webhook_endpoint("mch_a", "we_gone", 2)
                .await
                .unwrap()
        );
        // A deleted one frees its place.
        assert!(store.insert_webhook_endpoint(&fifth, 4).await.unwrap());
        assert!(
            store
                .delete_webhook_endpoint("mch_a", "we_fifth", 3)
                .await
                .unwrap()
        );
        assert!(
            !store
                .delete_webhook_endpoint("mch_a", "we_gone", 3)
                .await
                .unwrap()
        );
        store
            .insert_payment(&payment("pay_1", "mch_a", "o1", 1000))
            .await
            .unwrap();
        store
            .transition("mch_a", "pay_1", PaymentEvent::Paid, &paid(2000), render)
            .await
            .unwrap();
        let event_id = "evt_pay_1_2";
        let mut targets: Vec<String> = store
            .deliveries(event_id)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.endpoint_id)
            .collect();
        targets.sort();
        assert_eq!(targets, ["we_all", "we_paid"]);

        // Claimed once, however many workers ask; a lapsed claim can be taken over.
        let first = store
            .claim_due_deliveries(2000, 1000, 10, &[])
            .await
            .unwrap();
        assert_eq!(first.len(), 2);
        assert!(
            store
                .claim_due_deliveries(2500, 1000, 10, &[])
                .await
                .unwrap()
                .is_empty()
        );
        let taken_over = store
            .claim_due_deliveries(3001, 1000, 10, &[])
            .await
            .unwrap();
        assert_eq!(taken_over.len(), 2);
        // The first claim is stale: its attempt is not recorded.
        let attempt = |d: &DeliveryRow, at: i64, code: i64| AttemptRow {
            event_id: d.event_id.clone(),
            endpoint_id: d.endpoint_id.clone(),
            attempt: d.attempts + 1,
            at,
            status_code: Some(code),
            latency_ms: 5,
            error: None,
        };
        assert!(
            !store
                .record_attempt(
                    &first[0],
                    &attempt(&first[0], 3100, 200),
                    AttemptOutcome::Delivered
                )
                .await
                .unwrap()
        );
        for d in &taken_over {
            assert!(
                store
                    .record_attempt(
                        d,
                        &attempt(d, 3100, 500),
                        AttemptOutcome::Retry { next_at: 4000 }
                    )
                    .await
                    .unwrap()
            );
        }
        assert!(
            store
                .claim_due_deliveries(3900, 1000, 10, &[])
                .await
                .unwrap()
                .is_empty()
        );
        let again = store
            .claim_due_deliveries(4000, 1000, 10, &[])
            .await
            .unwrap();
        assert_eq!(again.len(), 2);
        // Recorded together (one transaction), beside a stale claim that is not recorded.
        let mut group = vec![(
            first[1].clone(),
            attempt(&first[1], 4100, 200),
            AttemptOutcome::Delivered,
        )];
        for d in &again {
            let outcome = if d.endpoint_id == "we_all" {
                AttemptOutcome::Delivered
            } else {
                AttemptOutcome::Dead
            };
            group.push((d.clone(), attempt(d, 4100, 200), outcome));
        }
        assert_eq!(
            store.record_attempts(&group).await.unwrap(),
            [false, true, true]
        );
        assert!(
            store
                .claim_due_deliveries(99_999, 1000, 10, &[])
                .await
                .unwrap()
                .is_empty()
        );
        let attempts = store.attempts(event_id, 100).await.unwrap();
        assert_eq!(attempts.len(), 4);
        // At most the latest `limit`, still by endpoint and attempt.
        let latest = store.attempts(event_id, 2).await.unwrap();
        assert_eq!(latest.len(), 2);
        let newest = attempts.iter().map(|a| a.at).max().unwrap();
        assert!(latest.iter().any(|a| a.at == newest), "{latest:?}");
        assert!(
            latest
                .windows(2)
                .all(|w| (&w[0].endpoint_id, w[0].attempt) <= (&w[1].endpoint_id, w[1].attempt))
        );
        let dead = store
            .list_events(
                "mch_a",
                &EventFilter {
                    delivery_status: Some("dead".into()),
                    limit: 10,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(dead.len(), 1);
        // Redelivery starts a new round for both subscribed endpoints.
        assert_eq!(
            store
                .redeliver("mch_a", &Redeliver::Event(event_id.into()), 5000)
                .await
                .unwrap(),
            2
        );
        // An endpoint the caller has no room for is left out.
        let skipping = store
            .claim_due_deliveries(5000, 1000, 10, &["we_all".to_string(), "we_x".to_string()])
            .await
            .unwrap();
        assert_eq!(skipping.len(), 1);
        assert_eq!(skipping[0].endpoint_id, "we_paid");
        // A lane claims its own endpoint's deliveries only.
        let mut round = store
            .claim_due_deliveries_of("we_all", 5000, 1000, 10)
            .await
            .unwrap();
        assert_eq!(round.len(), 1);
        assert_eq!(round[0].endpoint_id, "we_all");
        assert!(
            store
                .claim_due_deliveries(5000, 1000, 10, &[])
                .await
                .unwrap()
                .is_empty()
        );
        round.extend(skipping);
        assert!(
            round
                .iter()
                .all(|d| d.round_attempts == 0 && d.attempts == 2)
        );
    }
}
