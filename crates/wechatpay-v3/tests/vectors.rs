//! The official test vectors (see tests/vectors/README.md), run against this crate.

use std::path::PathBuf;

use wechatpay_v3::aead::{self, ApiV3Key};
use wechatpay_v3::bill::{self, Bill};
use wechatpay_v3::crypto::{Certificate, PrivateKey, PublicKey};
use wechatpay_v3::model::CertificatesAnswer;
use wechatpay_v3::notify::{self, NotifyError};
use wechatpay_v3::paysign::{AppPayParams, JsapiPayParams};
use wechatpay_v3::verify::{SignatureHeaders, Verifier, VerifyError};

fn vector(path: &str) -> String {
    let full: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "vectors", path]
        .iter()
        .collect();
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

fn signing_key() -> PrivateKey {
    PrivateKey::from_pkcs8_pem(&vector("rsa-sha256-sign/private_key.pem")).unwrap()
}

#[test]
fn rsa_sha256_signature_is_the_official_one() {
    let key = signing_key();
    let message = vector("rsa-sha256-sign/message.txt");
    let expected = vector("rsa-sha256-sign/signature.b64");
    assert_eq!(key.sign(message.as_bytes()), expected.trim());
    key.public_key()
        .verify(message.as_bytes(), expected.trim())
        .unwrap();
}

#[derive(serde::Deserialize)]
struct DerivedCase {
    name: String,
    message: String,
    signature: String,
}

#[test]
fn derived_request_jsapi_and_app_signatures() {
    let key = signing_key();
    let cases: Vec<DerivedCase> =
        serde_json::from_str(&vector("rsa-sha256-sign/derived_cases.json")).unwrap();
    assert_eq!(cases.len(), 3);
    for case in &cases {
        assert_eq!(
            key.sign(case.message.as_bytes()),
            case.signature,
            "{}",
            case.name
        );
    }
    // The request message is built exactly as the vector's.
    let request = wechatpay_v3::auth::request_message(
        "GET",
        "/v3/certificates",
        "1554208460",
        "593BEC0C930BF1AFEB40B4A08C8FB242",
        b"",
    );
    assert_eq!(request, cases[0].message.as_bytes());
    // The JSAPI paySign and APP sign of the documented example.
    let (appid, ts, nonce, prepay) = (
        "wx8888888888888888",
        1414561699,
        "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
        "wx201410272009395522657a690389285100",
    );
    let jsapi = JsapiPayParams::sign(&key, appid, prepay, ts, nonce);
    assert_eq!(jsapi.message(), cases[1].message.as_bytes());
    assert_eq!(jsapi.pay_sign, cases[1].signature);
    assert_eq!(
        jsapi.package,
        "prepay_id=wx201410272009395522657a690389285100"
    );
    assert_eq!(jsapi.sign_type, "RSA");
    jsapi.verify(&key.public_key()).unwrap();
    let json = serde_json::to_value(&jsapi).unwrap();
    let mut keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "appId",
            "nonceStr",
            "package",
            "paySign",
            "signType",
            "timeStamp"
        ]
    );
    let mini = serde_json::to_value(jsapi.for_mini_program()).unwrap();
    assert!(mini.get("appId").is_none());
    assert_eq!(mini["paySign"], cases[1].signature);

    let app = AppPayParams::sign(&key, appid, "1900000109", prepay, ts, nonce);
    assert_eq!(app.message(), cases[2].message.as_bytes());
    assert_eq!(app.sign, cases[2].signature);
    assert_eq!(app.package, "Sign=WXPay");
    app.verify(&key.public_key()).unwrap();
    // A tampered bundle is refused.
    let mut bad = app.clone();
    bad.prepayid.push('0');
    assert!(bad.verify(&key.public_key()).is_err());
}

fn notification_headers() -> SignatureHeaders {
    let h: serde_json::Value =
        serde_json::from_str(&vector("notification-aes128/headers.json")).unwrap();
    SignatureHeaders::from_lookup(|name| h.get(name).and_then(|v| v.as_str())).unwrap()
}

const NOTIFICATION_TIME: i64 = 1624523846;

#[test]
fn signed_callback_verifies_and_decrypts_with_aes_128() {
    let cert =
        Certificate::from_pem(&vector("notification-aes128/platform_certificate.pem")).unwrap();
    assert_eq!(cert.serial_no, "D7CE59D1F522D701");
    let mut verifier = Verifier::new();
    verifier.add_certificate(cert);
    let headers = notification_headers();
    let body = vector("notification-aes128/body.json");
    verifier
        .verify(&headers, body.as_bytes(), NOTIFICATION_TIME)
        .unwrap();

    // The window is enforced in both directions, at exactly 300 s.
    verifier
        .verify(&headers, body.as_bytes(), NOTIFICATION_TIME + 300)
        .unwrap();
    assert_eq!(
        verifier.verify(&headers, body.as_bytes(), NOTIFICATION_TIME + 301),
        Err(VerifyError::ClockSkew { skew_secs: 301 })
    );
    assert_eq!(
        verifier.verify(&headers, body.as_bytes(), NOTIFICATION_TIME - 301),
        Err(VerifyError::ClockSkew { skew_secs: -301 })
    );
    // One changed byte in the body fails.
    let tampered = body.replacen("签约成功", "签约失败", 1);
    assert_eq!(
        verifier.verify(&headers, tampered.as_bytes(), NOTIFICATION_TIME),
        Err(VerifyError::SignatureMismatch)
    );
    // An unknown serial is named.
    let mut other = headers.clone();
    other.serial = "ABC".into();
    assert_eq!(
        verifier.verify(&other, body.as_bytes(), NOTIFICATION_TIME),
        Err(VerifyError::UnknownSerial("ABC".into()))
    );
    // A signature probe is refused as such.
    let mut probe = headers.clone();
    probe.signature = format!("WECHATPAY/SIGNTEST/{}", headers.signature);
    assert_eq!(
        verifier.verify(&probe, body.as_bytes(), NOTIFICATION_TIME),
        Err(VerifyError::SignatureProbe)
    );

    // The key is 16 bytes, so the resource is AES-128-GCM: decrypt with the raw key.
    let envelope: notify::Notification = serde_json::from_str(&body).unwrap();
    let plaintext = envelope
        .resource
        .open_with(
            vector("notification-aes128/apiv3_key.txt")
                .trim()
                .as_bytes(),
        )
        .unwrap();
    assert_eq!(
        String::from_utf8(plaintext).unwrap(),
        vector("notification-aes128/plaintext.json").trim()
    );
    // A real APIv3 key must be 32 bytes; the 16-byte one is refused by the v3 path.
    assert_eq!(
        ApiV3Key::new("testMchAPIv3Key0"),
        Err(aead::AeadError::KeyLength(16))
    );
    // The full path refuses a wrong 32-byte key with a decryption error, after verifying.
    let wrong = ApiV3Key::new("a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb").unwrap();
    assert!(matches!(
        notify::open(
            &verifier,
            &headers,
            body.as_bytes(),
            &wrong,
            NOTIFICATION_TIME
        ),
        Err(NotifyError::Decrypt(_))
    ));
}

#[test]
fn go_sdk_aes_128_vector() {
    let plain = aead::open(
        b"testAPIv3Key0000",
        "wCq51qZv4Yfg",
        "Dl56FrqWQJF1t9LtC3vEUsniZKvbqdR8",
        "FsdXzxryWfKwvLJKf8LG/ToRPTRh8RN9wROC",
    )
    .unwrap();
    assert_eq!(plain, b"Hello World");
}

#[test]
fn aes_256_vector_with_a_12_byte_nonce() {
    let key = ApiV3Key::new("0123456789abcdef0123456789abcdef").unwrap();
    assert_eq!(
        key.seal("0123456789ab", "world", b"hello").unwrap(),
        "8cyLViyNtc/bBmbxDwyAVLDTpT+o"
    );
    assert_eq!(
        key.open("0123456789ab", "world", "8cyLViyNtc/bBmbxDwyAVLDTpT+o")
            .unwrap(),
        b"hello"
    );
    assert!(
        key.open("0123456789ab", "World", "8cyLViyNtc/bBmbxDwyAVLDTpT+o")
            .is_err()
    );
    assert_eq!(
        key.open("0123456789abcdef", "world", "8cyLViyNtc/bBmbxDwyAVLDTpT+o"),
        Err(aead::AeadError::NonceLength(16))
    );
}

#[test]
fn certificates_answer_decrypts_with_aes_256() {
    let key = ApiV3Key::new(vector("certificates-aes256/apiv3_key.txt").trim()).unwrap();
    let answer: CertificatesAnswer =
        serde_json::from_str(&vector("certificates-aes256/response.json")).unwrap();
    let certs = answer.decrypt(&key).unwrap();
    assert_eq!(certs.len(), 1);
    let expected_serial = vector("certificates-aes256/expected_serial.txt");
    assert_eq!(certs[0].serial_no, expected_serial.trim());
    assert_eq!(
        certs[0].pem.trim(),
        vector("certificates-aes256/certificate.pem").trim()
    );
    // Valid 2023-09-19 to 2028-09-17.
    assert!(certs[0].is_valid_at(1_700_000_000));
    assert!(!certs[0].is_valid_at(1_900_000_000));
}

#[test]
fn expired_keyset_still_verifies_in_public_key_mode_not_as_certificate() {
    let merchant =
        PrivateKey::from_pkcs8_pem(&vector("keyset-expired/merchant_private_key.pem")).unwrap();
    let merchant_cert =
        Certificate::from_pem(&vector("keyset-expired/merchant_certificate.pem")).unwrap();
    assert_eq!(
        merchant_cert.serial_no,
        "5F1C72E2A8931B72A2E13AF8DEE92471EB397115"
    );
    assert_eq!(merchant_cert.public_key, merchant.public_key());

    let platform =
        PrivateKey::from_pkcs8_pem(&vector("keyset-expired/wechat_pay_private_key.pem")).unwrap();
    let platform_cert =
        Certificate::from_pem(&vector("keyset-expired/wechat_pay_certificate.pem")).unwrap();
    assert_eq!(
        platform_cert.serial_no,
        "440024045C4A427599D09BB4E3DE0279F2E813FD"
    );
    let platform_pub =
        PublicKey::from_spki_pem(&vector("keyset-expired/wechat_pay_public_key.pem")).unwrap();
    assert_eq!(platform_pub, platform.public_key());
    assert_eq!(platform_cert.public_key, platform_pub);

    // A merchant in the switching period trusts both; each serial picks its key.
    let now = 1_800_000_000; // after 2025-05-09: the certificate has expired
    let body = br#"{"code_url":"weixin://wxpay/bizpayurl?pr=p4lpSuKzz"}"#;
    let signed = |serial: &str| {
        let ts = now.to_string();
        let nonce = "0123456789abcdef0123456789abcdef";
        SignatureHeaders {
            signature: platform.sign(&wechatpay_v3::verify::response_message(&ts, nonce, body)),
            timestamp: ts,
            nonce: nonce.into(),
            serial: serial.into(),
            signature_type: Some("WECHATPAY2-SHA256-RSA2048".into()),
        }
    };
    let mut verifier = Verifier::new();
    verifier.add_certificate(platform_cert);
    verifier.add_public_key(
        "PUB_KEY_ID_0112345678912025010100000000000000",
        platform_pub,
    );
    verifier
        .verify(
            &signed("PUB_KEY_ID_0112345678912025010100000000000000"),
            body,
            now,
        )
        .unwrap();
    assert_eq!(
        verifier.verify(
            &signed("440024045C4A427599D09BB4E3DE0279F2E813FD"),
            body,
            now
        ),
        Err(VerifyError::CertificateNotValid(
            "440024045C4A427599D09BB4E3DE0279F2E813FD".into()
        ))
    );
    // A wrong signature type is refused.
    let mut wrong_type = signed("PUB_KEY_ID_0112345678912025010100000000000000");
    wrong_type.signature_type = Some("WECHATPAY2-SM2-WITH-SM3".into());
    assert!(matches!(
        verifier.verify(&wrong_type, body, now),
        Err(VerifyError::SignatureType(_))
    ));
}

#[test]
fn bill_vector_parses_and_round_trips_through_gzip_and_hash() {
    let raw = std::fs::read(
        [
            env!("CARGO_MANIFEST_DIR"),
            "tests",
            "vectors",
            "bill",
            "bill.ALL.csv",
        ]
        .iter()
        .collect::<PathBuf>(),
    )
    .unwrap();
    assert!(raw.starts_with("\u{feff}".as_bytes()));
    let parsed = Bill::parse(&raw).unwrap();
    assert_eq!(parsed.columns.len(), 27);
    assert_eq!(parsed.columns[0], "交易时间");
    assert_eq!(parsed.rows.len(), 45);
    assert!(parsed.rows.iter().all(|r| r.len() == 27));
    assert_eq!(parsed.rows[0][5], "4200000263201902167700134212");
    assert_eq!(parsed.summary_columns[0], "总交易单数");
    assert_eq!(parsed.summary[1], "0.47");

    let hash = bill::sha1_hex(&raw);
    let gz = bill::gzip(&raw);
    assert_eq!(bill::check_download(&gz, true, "SHA1", &hash).unwrap(), raw);
    assert_eq!(
        bill::check_download(&raw, false, "SHA1", &hash.to_uppercase()).unwrap(),
        raw
    );
    let mut corrupted = raw.clone();
    corrupted[100] ^= 1;
    assert!(matches!(
        bill::check_download(&corrupted, false, "SHA1", &hash),
        Err(bill::BillError::HashMismatch { .. })
    ));
    assert!(bill::check_download(&raw, true, "SHA1", &hash).is_err());
}

#[test]
fn trade_bill_vector_reads_into_typed_rows_in_fen() {
    use bill::{BillRefundStatus, Fee, TradeBill, TradeLayout, TradeRowState};
    let raw = std::fs::read(
        [
            env!("CARGO_MANIFEST_DIR"),
            "tests",
            "vectors",
            "bill",
            "bill.ALL.csv",
        ]
        .iter()
        .collect::<PathBuf>(),
    )
    .unwrap();
    let bill = TradeBill::parse(&raw).unwrap();
    assert_eq!((bill.layout, bill.legacy), (TradeLayout::All, false));
    assert_eq!(bill.rows.len(), 45);
    let refund = &bill.rows[0];
    assert_eq!(refund.state, TradeRowState::Refund);
    let part = refund.refund.as_ref().unwrap();
    assert_eq!(
        (part.amount, part.status.clone()),
        (1, BillRefundStatus::Success)
    );
    assert_eq!(part.out_refund_no, "REF4200000263201902167700963919");
    let paid = &bill.rows[2];
    assert_eq!(
        (paid.state.clone(), paid.settlement_total, paid.fee),
        (TradeRowState::Success, 3, Fee(1_000))
    );
    assert_eq!(paid.fee_rate, "39.00%");
    assert_eq!(bill.summary.count, 45);
    assert_eq!(bill.summary.settlement_total, Some(47));
    assert_eq!(bill.summary.refund_total, Some(14));
    assert_eq!(bill.summary.fee_total, Some(Fee(8_000)));
    let sum: i64 = bill.rows.iter().map(|r| r.settlement_total).sum();
    assert_eq!(Some(sum), bill.summary.settlement_total);
}

#[test]
fn older_and_refund_layouts_read_by_header_name() {
    use bill::{TradeBill, TradeLayout};
    let legacy = "\u{feff}交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,总金额,代金券或立减优惠金额,商品名称,商户数据包,手续费,费率\r\n\
        `2024-03-01 10:00:00,`wx1,`190000,`0,`,`4200001,`o1,`u1,`NATIVE,`SUCCESS,`OTHERS,`CNY,`12.34,`0.00,`书,`,`0.07000,`0.60%\r\n\
        总交易单数,总交易额,总退款金额,总代金券或立减优惠退款金额,手续费总金额\r\n\
        `1.0,`12.34,`0.00,`0.00,`0.07000\r\n";
    let bill = TradeBill::parse(legacy.as_bytes()).unwrap();
    assert_eq!((bill.layout, bill.legacy), (TradeLayout::Success, true));
    assert_eq!(bill.rows[0].settlement_total, 1234);
    assert_eq!(bill.rows[0].order_total, None);
    assert_eq!(bill.summary.settlement_total, Some(1234));
    assert_eq!(bill.summary.order_total, None);

    let refund = "\u{feff}交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,退款申请时间,退款成功时间,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注\r\n\
        `2024-03-01 10:00:00,`wx1,`190000,`0,`,`4200001,`o1,`u1,`NATIVE,`REFUND,`OTHERS,`CNY,`0.00,`0.00,`2024-03-01 10:00:00,`,`5000001,`r1,`5.00,`0.00,`ORIGINAL,`PROCESSING,`书,`,`-0.03000,`0.60%,`0.00,`5.00,`\r\n\
        总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\r\n\
        `1,`0.00,`5.00,`0.00,`-0.03000,`0.00,`5.00\r\n";
    let bill = TradeBill::parse(refund.as_bytes()).unwrap();
    assert_eq!(bill.layout, TradeLayout::Refund);
    let part = bill.rows[0].refund.as_ref().unwrap();
    assert_eq!((part.amount, part.requested), (500, Some(500)));
    assert_eq!(part.status, bill::BillRefundStatus::Processing);
    assert_eq!(part.succeeded_at.as_deref(), Some(""));
    assert_eq!(bill.rows[0].fee.fen_rounded(), -3);

    let short_line = legacy.replace(",`0.60%\r\n", "\r\n");
    assert!(matches!(
        TradeBill::parse(short_line.as_bytes()),
        Err(bill::BillError::Width { line: 1, .. })
    ));
    let bad_amount = legacy.replace("`12.34,`0.00,`书", "`12.345,`0.00,`书");
    assert!(matches!(
        TradeBill::parse(bad_amount.as_bytes()),
        Err(bill::BillError::Amount { .. })
    ));
}
