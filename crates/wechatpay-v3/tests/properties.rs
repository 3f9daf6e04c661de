//! Property tests: sign-then-verify round trips, and any single-byte change breaks them.
//! Parsers never panic on arbitrary input.

use std::sync::OnceLock;

use proptest::prelude::*;
use wechatpay_v3::auth::{Authorization, MerchantSigner};
use wechatpay_v3::crypto::PrivateKey;
use wechatpay_v3::notify;
use wechatpay_v3::verify::{SignatureHeaders, Verifier, response_message};

fn key() -> &'static PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| PrivateKey::generate().unwrap())
}

fn flip(bytes: &[u8], index: usize, bit: u8) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let i = index % out.len();
    out[i] ^= 1 << (bit % 8);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn request_signature_round_trips_and_breaks_on_any_change(
        body in proptest::collection::vec(any::<u8>(), 1..300),
        path in "/v3/[a-z/_-]{1,40}(\\?[a-z]{1,8}=[0-9A-Za-z%]{1,16})?",
        ts in 1_500_000_000i64..2_000_000_000,
        nonce in "[0-9A-Za-z]{32}",
        which in 0usize..4,
        index in any::<usize>(),
        bit in any::<u8>(),
    ) {
        let signer = MerchantSigner { mchid: "1900000109".into(), serial_no: "ABC".into(), key: PrivateKey::from_pkcs8_der(&key().expose_pkcs8_der()).unwrap() };
        let auth = signer.authorize("POST", &path, &body, ts, &nonce);
        let parsed = Authorization::parse(&auth.header_value()).unwrap();
        prop_assert_eq!(&parsed, &auth);
        let public = key().public_key();
        prop_assert!(public.verify(&parsed.message("POST", &path, &body), &parsed.signature).is_ok());

        let (m_path, m_body, m_ts, m_nonce) = match which {
            0 => (path.clone().into_bytes(), flip(&body, index, bit), parsed.timestamp.clone().into_bytes(), nonce.clone().into_bytes()),
            1 => (flip(path.as_bytes(), index, bit), body.clone(), parsed.timestamp.clone().into_bytes(), nonce.clone().into_bytes()),
            2 => (path.clone().into_bytes(), body.clone(), flip(parsed.timestamp.as_bytes(), index, bit), nonce.clone().into_bytes()),
            _ => (path.clone().into_bytes(), body.clone(), parsed.timestamp.clone().into_bytes(), flip(nonce.as_bytes(), index, bit)),
        };
        let message = wechatpay_v3::auth::request_message(
            "POST",
            &String::from_utf8_lossy(&m_path),
            &String::from_utf8_lossy(&m_ts),
            &String::from_utf8_lossy(&m_nonce),
            &m_body,
        );
        prop_assert!(public.verify(&message, &parsed.signature).is_err());
    }

    #[test]
    fn answer_signature_round_trips_and_breaks_on_any_change(
        body in proptest::collection::vec(any::<u8>(), 0..300),
        nonce in "[0-9a-f]{32}",
        which in 0usize..3,
        index in any::<usize>(),
        bit in any::<u8>(),
    ) {
        let now = 1_700_000_000i64;
        let ts = now.to_string();
        let signature = key().sign(&response_message(&ts, &nonce, &body));
        let mut verifier = Verifier::new();
        verifier.add_public_key("PUB_KEY_ID_01", key().public_key());
        let headers = SignatureHeaders { timestamp: ts.clone(), nonce: nonce.clone(), serial: "PUB_KEY_ID_01".into(), signature, signature_type: None };
        prop_assert!(verifier.verify(&headers, &body, now).is_ok());
        let mut changed = headers.clone();
        let mut changed_body = body.clone();
        match which {
            0 if !body.is_empty() => changed_body = flip(&body, index, bit),
            0 => changed_body = vec![b'x'],
            1 => changed.nonce = String::from_utf8_lossy(&flip(nonce.as_bytes(), index, bit)).into_owned(),
            _ => changed.timestamp = (now + 1 + (index % 200) as i64).to_string(),
        }
        prop_assert!(verifier.verify(&changed, &changed_body, now).is_err());
    }

    #[test]
    fn authorization_parser_never_panics(input in ".{0,400}") {
        let _ = Authorization::parse(&input);
        let _ = Authorization::parse(&format!("WECHATPAY2-SHA256-RSA2048 {input}"));
    }

    #[test]
    fn notification_parser_never_panics(
        body in proptest::collection::vec(any::<u8>(), 0..600),
        ciphertext in "[A-Za-z0-9+/=]{0,80}",
        nonce in ".{0,20}",
        aad in proptest::option::of(".{0,20}"),
    ) {
        let verifier = Verifier::new();
        let headers = SignatureHeaders { timestamp: "1".into(), nonce: "n".into(), serial: "s".into(), signature: "x".into(), signature_type: None };
        let key = wechatpay_v3::aead::ApiV3Key::generate();
        let _ = notify::open(&verifier, &headers, &body, &key, 1);
        let resource = notify::EncryptedResource { original_type: "transaction".into(), algorithm: "AEAD_AES_256_GCM".into(), ciphertext, associated_data: aad, nonce };
        prop_assert!(resource.open_with(key.expose().as_bytes()).is_err());
    }
}
