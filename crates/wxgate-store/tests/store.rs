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
    merchants_and_api_keys,
    payments_are_unique_per_merchant_order_id,
    transitions_write_history_and_outbox_once,
    concurrent_transitions_apply_once,
    listing_filters_and_pages,
    sync_work_is_claimed_once,
    idempotency_keys,
);

mod checks {
    use super::*;

    pub fn merchant(id: &str) -> MerchantRow {
        MerchantRow {
            id: id.into(),
            name: "Test shop".into(),
            mode: "sandbox".into(),
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
            paid_after_close_policy: "accept".into(),
            created_at: 1,
        }
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
            integration: "native".into(),
            status: "pending".into(),
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
        assert_eq!(
            store.insert_payment(&p).await.unwrap(),
            InsertOutcome::Inserted
        );
        let again = payment("pay_2", "mch_a", "order1", 2000);
        assert_eq!(
            store.insert_payment(&again).await.unwrap(),
            InsertOutcome::Existing(Box::new(p.clone()))
        );
        assert_eq!(
            store
                .insert_payment(&payment("pay_3", "mch_b", "order1", 1000))
                .await
                .unwrap(),
            InsertOutcome::Inserted
        );
        assert_eq!(
            store.payment("mch_a", "pay_1").await.unwrap(),
            Some(p.clone())
        );
        assert_eq!(
            store.payment("mch_b", "pay_1").await.unwrap(),
            None,
            "merchants never see each other's payments"
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
        assert_eq!(history[0].status, "pending");
    }

    pub async fn transitions_write_history_and_outbox_once(store: Store) {
        store.insert_merchant(&merchant("mch_a")).await.unwrap();
        store
            .insert_payment(&payment("pay_1", "mch_a", "o1", 1000))
            .await
            .unwrap();
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
            .map(|h| h.status)
            .collect();
        assert_eq!(history, ["pending", "succeeded"]);
        assert!(matches!(
            store
                .transition("mch_b", "pay_1", PaymentEvent::Paid, &paid(1), render)
                .await,
            Err(StoreError::PaymentNotFound(_))
        ));
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
}
