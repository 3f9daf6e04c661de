//! A thin async client around the pure protocol: it signs each request, sends it with
//! timeouts, verifies every 2xx answer (204 included), turns error answers into [`ApiError`],
//! and retries only what WeChat says is safe to retry — 5xx, rate limits and transport
//! failures — sending the very same body again (so the same `out_trade_no` / `out_refund_no`).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::aead::ApiV3Key;
use crate::auth::MerchantSigner;
use crate::bill::{self, BillError};
use crate::clock::{Clock, SystemClock};
use crate::crypto::Certificate;
use crate::error::{ApiError, ErrorCode};
use crate::model::*;
use crate::validate::FieldError;
use crate::verify::{HEADER_SERIAL, SignatureHeaders, Verifier, VerifyError};

/// Paths whose answers are raw files, unsigned by WeChat.
const UNSIGNED_PREFIXES: &[&str] = &[
    BILL_DOWNLOAD_PATH,
    "/v3/statements",
    "/v3/global/statements",
];

#[derive(Debug)]
pub struct ClientConfig {
    /// `https://api.mch.weixin.qq.com/` in production; the simulator's address in tests.
    pub base_url: url::Url,
    pub signer: MerchantSigner,
    /// The platform certificates and/or public key this merchant trusts.
    pub verifier: Verifier,
    /// The APIv3 key, needed to read `/v3/certificates`.
    pub apiv3_key: Option<ApiV3Key>,
    /// Sent as `Wechatpay-Serial` on every request: the `PUB_KEY_ID_...` asks WeChat to sign
    /// answers with the public key.
    pub wechatpay_serial: Option<String>,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Attempts in all, the first included.
    pub attempts_max: u32,
    /// The wait before the first retry; doubled for each further one.
    pub retry_backoff: Duration,
    /// Told of every attempt's outcome (for metrics); none by default.
    pub observer: Option<CallObserver>,
}

/// One attempt of a call, as an observer sees it.
#[derive(Debug, Clone)]
pub struct CallReport<'a> {
    pub method: &'a str,
    /// The URL's path (ids included: an observer that labels by it must bound it).
    pub path: &'a str,
    /// The HTTP status; 0 when no answer came.
    pub status: u16,
    /// WeChat's error code of a refusal, or `TRANSPORT` when no answer came.
    pub error_code: Option<&'a str>,
    pub seconds: f64,
}

/// What is told of every attempt of the client's calls.
#[derive(Clone)]
pub struct CallObserver(pub Arc<dyn Fn(&CallReport<'_>) + Send + Sync>);

impl std::fmt::Debug for CallObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallObserver")
    }
}

impl ClientConfig {
    /// Attempts of one call by default: the first and two retries.
    pub const ATTEMPTS_MAX: u32 = 3;
    /// How long opening a connection may take, by default.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

    pub fn new(base_url: url::Url, signer: MerchantSigner, verifier: Verifier) -> Self {
        Self {
            base_url,
            signer,
            verifier,
            apiv3_key: None,
            wechatpay_serial: None,
            timeout: Duration::from_secs(10),
            connect_timeout: Self::CONNECT_TIMEOUT,
            attempts_max: Self::ATTEMPTS_MAX,
            retry_backoff: Duration::from_millis(200),
            observer: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("request field {0}")]
    Invalid(#[from] FieldError),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("WeChat Pay's answer failed verification: {0}")]
    Verify(#[from] VerifyError),
    #[error("timed out waiting for WeChat Pay")]
    Timeout,
    #[error("transport: {0}")]
    Transport(String),
    #[error("WeChat Pay's answer could not be read: {0}")]
    Decode(String),
    #[error("bill: {0}")]
    Bill(#[from] BillError),
    #[error("certificates: {0}")]
    Certificates(String),
    /// WeChat refused a request that changes something after an earlier attempt of it got no
    /// clear answer (a timeout, a broken connection, a 5xx). That attempt may have been
    /// applied, so the refusal does not show that nothing was done: ask WeChat before acting
    /// on it.
    #[error("WeChat Pay refused a retry whose earlier attempt may have been applied: {0}")]
    RefusedAfterUnclear(ApiError),
}

impl ClientError {
    /// Whether the same request, sent again unchanged, may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Api(e) => e.is_retryable(),
            Self::Timeout | Self::Transport(_) => true,
            _ => false,
        }
    }

    /// Whether WeChat may have applied the request this error answered: it timed out, its
    /// connection broke, or WeChat failed inside (5xx).
    fn may_have_applied(&self) -> bool {
        match self {
            Self::Api(e) => e.status >= 500,
            Self::Timeout | Self::Transport(_) => true,
            _ => false,
        }
    }

    /// The WeChat error, when WeChat answered with one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Self::Api(e) => Some(e),
            _ => None,
        }
    }
}

/// An answer as received.
#[derive(Debug, Clone)]
pub struct RawAnswer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Bytes,
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    config: Arc<ClientConfig>,
    verifier: Arc<RwLock<Verifier>>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.config.base_url.as_str())
            .field("mchid", &self.config.signer.mchid)
            .finish()
    }
}

/// An HTTP client for calls to WeChat Pay: this library's user agent, and `connect_timeout` to
/// open a connection. (Each call's own timeout is its [`ClientConfig::timeout`].)
pub fn http_client(connect_timeout: Duration) -> Result<reqwest::Client, ClientError> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .user_agent(concat!("wechatpay-v3-rust/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ClientError::Transport(e.to_string()))
}

impl Client {
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    pub fn with_clock(config: ClientConfig, clock: Arc<dyn Clock>) -> Result<Self, ClientError> {
        let http = http_client(config.connect_timeout)?;
        Ok(Self::with_http(config, http, clock))
    }

    /// A client that sends on `http` (from [`http_client`]), which other clients may share:
    /// building an HTTP client loads the system's root certificates, so a process that calls
    /// for many merchants builds one. Each call still times out after `config.timeout`.
    pub fn with_http(config: ClientConfig, http: reqwest::Client, clock: Arc<dyn Clock>) -> Self {
        Self {
            http,
            verifier: Arc::new(RwLock::new(config.verifier.clone())),
            config: Arc::new(config),
            clock,
        }
    }

    pub fn mchid(&self) -> &str {
        &self.config.signer.mchid
    }

    /// Sends one signed request, retrying what is safe to retry, and verifies a 2xx answer.
    pub async fn execute(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<RawAnswer, ClientError> {
        let url = self
            .config
            .base_url
            .join(path_and_query.trim_start_matches('/'))
            .map_err(|e| ClientError::Transport(format!("bad URL {path_and_query}: {e}")))?;
        self.execute_url(method, url, body).await
    }

    async fn execute_url(
        &self,
        method: Method,
        url: url::Url,
        body: Option<Vec<u8>>,
    ) -> Result<RawAnswer, ClientError> {
        let mut attempt = 1;
        // Whether an earlier attempt of a request that changes something may have been applied.
        let mut unclear = false;
        loop {
            let started = std::time::Instant::now();
            let result = self.send_once(&method, &url, body.as_deref()).await;
            self.report(&method, &url, &result, started.elapsed().as_secs_f64());
            match result {
                Err(e) if e.is_retryable() && attempt < self.config.attempts_max => {
                    unclear |= method != Method::GET && e.may_have_applied();
                    let backoff = self.config.retry_backoff * 2u32.pow(attempt - 1);
                    tokio::time::sleep(backoff).await;
                    attempt += 1;
                }
                Err(ClientError::Api(e)) if unclear && !e.is_retryable() => {
                    return Err(ClientError::RefusedAfterUnclear(e));
                }
                other => return other,
            }
        }
    }

    /// Tells the observer, if any, how an attempt went.
    fn report(
        &self,
        method: &Method,
        url: &url::Url,
        result: &Result<RawAnswer, ClientError>,
        seconds: f64,
    ) {
        let Some(observer) = &self.config.observer else {
            return;
        };
        let (status, error_code) = match result {
            Ok(answer) => (answer.status, None),
            Err(ClientError::Api(api)) => (api.status, Some(api.code.as_str())),
            Err(_) => (0, Some("TRANSPORT")),
        };
        (observer.0)(&CallReport {
            method: method.as_str(),
            path: url.path(),
            status,
            error_code,
            seconds,
        });
    }

    async fn send_once(
        &self,
        method: &Method,
        url: &url::Url,
        body: Option<&[u8]>,
    ) -> Result<RawAnswer, ClientError> {
        let canonical = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let body_bytes = body.unwrap_or_default();
        let auth = self.config.signer.authorize(
            method.as_str(),
            &canonical,
            body_bytes,
            self.clock.now_unix(),
            &crate::nonce(32),
        );
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .timeout(self.config.timeout)
            .header("Authorization", auth.header_value())
            .header("Accept", "application/json");
        if let Some(serial) = &self.config.wechatpay_serial {
            request = request.header(HEADER_SERIAL, serial);
        }
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body.to_vec());
        }
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(transport)?;
        let answer = RawAnswer {
            status,
            headers,
            body,
        };
        if !(200..300).contains(&status) {
            let request_id = header(&answer.headers, "Request-ID").map(str::to_string);
            return Err(ApiError::from_answer(status, &answer.body, request_id).into());
        }
        if !UNSIGNED_PREFIXES.iter().any(|p| url.path().starts_with(p)) {
            self.verify(&answer)?;
        }
        Ok(answer)
    }

    /// Verifies a signed answer with the trusted keys at the client's clock.
    pub fn verify(&self, answer: &RawAnswer) -> Result<(), VerifyError> {
        let headers = SignatureHeaders::from_lookup(|name| header(&answer.headers, name))?;
        let verifier = self.verifier.read().expect("verifier lock poisoned");
        verifier.verify(&headers, &answer.body, self.clock.now_unix())
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let body = body
            .map(|b| serde_json::to_vec(b).map_err(|e| ClientError::Decode(e.to_string())))
            .transpose()?;
        let answer = self.execute(method, path_and_query, body).await?;
        serde_json::from_slice(&answer.body).map_err(|e| ClientError::Decode(e.to_string()))
    }

    async fn call_no_content<B: Serialize>(&self, path: &str, body: &B) -> Result<(), ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Decode(e.to_string()))?;
        self.execute(Method::POST, path, Some(body))
            .await
            .map(|_| ())
    }

    // ---- domestic payments ----

    pub async fn prepay_native(
        &self,
        req: &PrepayRequest,
    ) -> Result<NativePrepayAnswer, ClientError> {
        req.validate(PrepayKind::Native)?;
        self.call(Method::POST, PrepayKind::Native.path(), Some(req))
            .await
    }

    /// JSAPI and Mini Program prepay.
    pub async fn prepay_jsapi(&self, req: &PrepayRequest) -> Result<PrepayIdAnswer, ClientError> {
        req.validate(PrepayKind::Jsapi)?;
        self.call(Method::POST, PrepayKind::Jsapi.path(), Some(req))
            .await
    }

    pub async fn prepay_app(&self, req: &PrepayRequest) -> Result<PrepayIdAnswer, ClientError> {
        req.validate(PrepayKind::App)?;
        self.call(Method::POST, PrepayKind::App.path(), Some(req))
            .await
    }

    pub async fn prepay_h5(&self, req: &PrepayRequest) -> Result<H5PrepayAnswer, ClientError> {
        req.validate(PrepayKind::H5)?;
        self.call(Method::POST, PrepayKind::H5.path(), Some(req))
            .await
    }

    pub async fn query_by_out_trade_no(
        &self,
        out_trade_no: &str,
    ) -> Result<Transaction, ClientError> {
        let url = query_by_out_trade_no_url(out_trade_no, self.mchid());
        self.call::<(), _>(Method::GET, &url, None).await
    }

    pub async fn query_by_transaction_id(
        &self,
        transaction_id: &str,
    ) -> Result<Transaction, ClientError> {
        let url = query_by_transaction_id_url(transaction_id, self.mchid());
        self.call::<(), _>(Method::GET, &url, None).await
    }

    /// Closes an unpaid order (WeChat answers 204).
    pub async fn close(&self, out_trade_no: &str) -> Result<(), ClientError> {
        let body = CloseRequest {
            mchid: self.mchid().to_string(),
        };
        self.call_no_content(&close_url(out_trade_no), &body).await
    }

    // ---- domestic refunds ----

    pub async fn refund(&self, req: &RefundRequest) -> Result<Refund, ClientError> {
        req.validate()?;
        self.call(Method::POST, REFUNDS_PATH, Some(req)).await
    }

    pub async fn query_refund(&self, out_refund_no: &str) -> Result<Refund, ClientError> {
        self.call::<(), _>(Method::GET, &refund_query_url(out_refund_no), None)
            .await
    }

    // ---- merchant transfers (payouts) ----

    /// Creates a transfer. After any answer but a definite one, query the same `out_bill_no`
    /// before sending anything again, and retry only with the same number and body.
    pub async fn create_transfer(
        &self,
        req: &TransferBillRequest,
    ) -> Result<TransferBillAnswer, ClientError> {
        req.validate()?;
        self.call(Method::POST, TRANSFER_BILLS_PATH, Some(req))
            .await
    }

    pub async fn query_transfer(&self, out_bill_no: &str) -> Result<TransferBill, ClientError> {
        self.call::<(), _>(Method::GET, &transfer_by_out_bill_no_url(out_bill_no), None)
            .await
    }

    pub async fn query_transfer_by_bill_no(
        &self,
        transfer_bill_no: &str,
    ) -> Result<TransferBill, ClientError> {
        self.call::<(), _>(
            Method::GET,
            &transfer_by_bill_no_url(transfer_bill_no),
            None,
        )
        .await
    }

    /// Cancels a transfer the payee has not confirmed (accepted asynchronously: `CANCELING`).
    pub async fn cancel_transfer(
        &self,
        out_bill_no: &str,
    ) -> Result<TransferCancelAnswer, ClientError> {
        self.call::<(), _>(Method::POST, &transfer_cancel_url(out_bill_no), None)
            .await
    }

    // ---- bills ----

    pub async fn trade_bill(&self, req: &TradeBillRequest) -> Result<BillOutcome, ClientError> {
        req.validate()?;
        bill_outcome(self.call::<(), _>(Method::GET, &req.url(), None).await)
    }

    pub async fn fund_flow_bill(
        &self,
        req: &FundFlowBillRequest,
    ) -> Result<BillOutcome, ClientError> {
        req.validate()?;
        bill_outcome(self.call::<(), _>(Method::GET, &req.url(), None).await)
    }

    /// Downloads a bill (signed request, unsigned answer), gunzips it when `gzipped`, checks
    /// its SHA-1 against the apply answer and returns the uncompressed file.
    pub async fn download_bill(
        &self,
        answer: &BillAnswer,
        gzipped: bool,
    ) -> Result<Vec<u8>, ClientError> {
        let url = url::Url::parse(&answer.download_url)
            .map_err(|e| ClientError::Decode(format!("download_url: {e}")))?;
        let raw = self.execute_url(Method::GET, url, None).await?;
        Ok(bill::check_download(
            &raw.body,
            gzipped,
            &answer.hash_type,
            &answer.hash_value,
        )?)
    }

    /// A cross-border statement of one day. Its answer is signed over `{"sha1":"<digest>"}`
    /// with the digest in `Wechatpay-Statement-Sha1`; the CSV must have that SHA-1.
    pub async fn global_statements(
        &self,
        req: &StatementsRequest,
    ) -> Result<StatementOutcome, ClientError> {
        req.validate()?;
        let raw = match self.execute(Method::GET, &req.url(), None).await {
            Ok(raw) => raw,
            Err(ClientError::Api(e)) if e.code == ErrorCode::NoStatementExist => {
                return Ok(StatementOutcome::NoStatement);
            }
            Err(ClientError::Api(e)) if e.code == ErrorCode::StatementCreating => {
                return Ok(StatementOutcome::Creating);
            }
            Err(e) => return Err(e),
        };
        let digest = header(&raw.headers, bill::statement::HEADER_STATEMENT_SHA1).ok_or(
            VerifyError::MissingHeader(bill::statement::HEADER_STATEMENT_SHA1),
        )?;
        let actual = bill::sha1_hex(&raw.body);
        if !actual.eq_ignore_ascii_case(digest) {
            return Err(BillError::HashMismatch {
                expected: digest.to_string(),
                actual,
            }
            .into());
        }
        let headers = SignatureHeaders::from_lookup(|name| header(&raw.headers, name))?;
        let verifier = self.verifier.read().expect("verifier lock poisoned");
        verifier.verify(
            &headers,
            &bill::statement::digest_body(digest),
            self.clock.now_unix(),
        )?;
        Ok(StatementOutcome::Ready(raw.body.to_vec()))
    }

    // ---- platform certificates ----

    /// Downloads `/v3/certificates`, decrypts them with the APIv3 key, verifies the answer
    /// against the decrypted certificates themselves, and trusts those that are valid now.
    pub async fn refresh_certificates(&self) -> Result<Vec<Certificate>, ClientError> {
        let key = self
            .config
            .apiv3_key
            .as_ref()
            .ok_or_else(|| ClientError::Certificates("no APIv3 key configured".into()))?;
        let url = self
            .config
            .base_url
            .join(CERTIFICATES_PATH.trim_start_matches('/'))
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        // Not verified yet: the keys to verify it are inside it.
        let raw = {
            let client = Self {
                http: self.http.clone(),
                config: self.config.clone(),
                verifier: Arc::new(RwLock::new(Verifier::new())),
                clock: self.clock.clone(),
            };
            client.send_unverified(url).await?
        };
        let answer: CertificatesAnswer =
            serde_json::from_slice(&raw.body).map_err(|e| ClientError::Decode(e.to_string()))?;
        let now = self.clock.now_unix();
        let certs: Vec<Certificate> = answer
            .decrypt(key)
            .map_err(|e| ClientError::Certificates(e.to_string()))?
            .into_iter()
            .filter(|c| c.is_valid_at(now))
            .collect();
        let mut candidate = self
            .verifier
            .read()
            .expect("verifier lock poisoned")
            .clone();
        for cert in &certs {
            candidate.add_certificate(cert.clone());
        }
        let headers = SignatureHeaders::from_lookup(|name| header(&raw.headers, name))?;
        candidate.verify(&headers, &raw.body, now)?;
        *self.verifier.write().expect("verifier lock poisoned") = candidate;
        Ok(certs)
    }

    async fn send_unverified(&self, url: url::Url) -> Result<RawAnswer, ClientError> {
        let canonical = url.path().to_string();
        let auth = self.config.signer.authorize(
            "GET",
            &canonical,
            b"",
            self.clock.now_unix(),
            &crate::nonce(32),
        );
        let response = self
            .http
            .get(url)
            .timeout(self.config.timeout)
            .header("Authorization", auth.header_value())
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(transport)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(transport)?;
        if !(200..300).contains(&status) {
            let request_id = header(&headers, "Request-ID").map(str::to_string);
            return Err(ApiError::from_answer(status, &body, request_id).into());
        }
        Ok(RawAnswer {
            status,
            headers,
            body,
        })
    }

    // ---- cross-border ----

    /// Cross-border prepay; the answer is `{code_url}`, `{prepay_id}` or `{h5_url}` by kind.
    pub async fn global_prepay(
        &self,
        kind: GlobalKind,
        req: &GlobalPrepayRequest,
    ) -> Result<serde_json::Value, ClientError> {
        req.validate(kind)?;
        self.call(Method::POST, kind.path(), Some(req)).await
    }

    pub async fn global_query_by_out_trade_no(
        &self,
        out_trade_no: &str,
    ) -> Result<Transaction, ClientError> {
        let url = global_query_by_out_trade_no_url(out_trade_no, self.mchid());
        self.call::<(), _>(Method::GET, &url, None).await
    }

    pub async fn global_query_by_transaction_id(
        &self,
        transaction_id: &str,
    ) -> Result<Transaction, ClientError> {
        let url = global_query_by_transaction_id_url(transaction_id, self.mchid());
        self.call::<(), _>(Method::GET, &url, None).await
    }

    pub async fn global_close(&self, out_trade_no: &str) -> Result<(), ClientError> {
        let body = CloseRequest {
            mchid: self.mchid().to_string(),
        };
        self.call_no_content(&global_close_url(out_trade_no), &body)
            .await
    }

    pub async fn global_refund(
        &self,
        req: &GlobalRefundRequest,
    ) -> Result<GlobalRefund, ClientError> {
        req.validate()?;
        self.call(Method::POST, GLOBAL_REFUNDS_PATH, Some(req))
            .await
    }

    pub async fn global_query_refund(
        &self,
        out_refund_no: &str,
    ) -> Result<GlobalRefund, ClientError> {
        let url = global_refund_query_url(out_refund_no, self.mchid());
        self.call::<(), _>(Method::GET, &url, None).await
    }
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn transport(e: reqwest::Error) -> ClientError {
    if e.is_timeout() {
        ClientError::Timeout
    } else {
        ClientError::Transport(e.to_string())
    }
}

/// Turns the two bill answers that are not failures into [`BillOutcome`] values.
fn bill_outcome(answer: Result<BillAnswer, ClientError>) -> Result<BillOutcome, ClientError> {
    match answer {
        Ok(answer) => Ok(BillOutcome::Ready(answer)),
        Err(ClientError::Api(e)) if e.code == ErrorCode::NoStatementExist => {
            Ok(BillOutcome::NoStatement)
        }
        Err(ClientError::Api(e)) if e.code == ErrorCode::StatementCreating => {
            Ok(BillOutcome::Creating)
        }
        Err(e) => Err(e),
    }
}
