//! Merchants and their connection to WeChat Pay (or the simulator): credentials sealed at rest,
//! opened once per process into a ready client.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;
use wechatpay_v3::aead::ApiV3Key;
use wechatpay_v3::auth::MerchantSigner;
use wechatpay_v3::client::{CallObserver, Client, ClientConfig, ClientError, http_client};
use wechatpay_v3::clock::SystemClock;
use wechatpay_v3::crypto::{Certificate, PrivateKey, PublicKey};
use wechatpay_v3::model::{
    GlobalKind, GlobalPrepayRequest, GlobalRefund, GlobalRefundAmountRequest, GlobalRefundRequest,
    PrepayRequest, Refund, RefundAmount, RefundRequest, Transaction,
};
use wechatpay_v3::verify::Verifier;
use wxgate_domain::{Integration, MerchantMode};
use wxgate_store::{MerchantRow, Store};

use crate::pace::{Api, Pace};
use crate::secrets::MasterKey;

/// What the master key seals.
#[derive(Serialize, Deserialize)]
pub(crate) struct SealedSecrets {
    pub(crate) merchant_private_key: String,
    pub(crate) apiv3_key: String,
    /// The Official Account's AppSecret, for webpage authorization (openid) in hosted checkout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) app_secret: Option<String>,
}

/// What WeChat's prepay answered, by integration.
pub enum Prepaid {
    Native { code_url: String },
    H5 { h5_url: String },
    Jsapi { prepay_id: String },
    MiniProgram { prepay_id: String },
    App { prepay_id: String },
}

/// A merchant's open connection to WeChat Pay.
pub struct Upstream {
    pub merchant: MerchantRow,
    client: Client,
    /// This merchant's pace of calls from this node.
    pace: Arc<Pace>,
    app_secret: Option<String>,
    /// For webpage authorization (not WeChat Pay's API), and how long it may take.
    http: reqwest::Client,
    timeout: Duration,
    pub signing_key: PrivateKey,
    pub apiv3_key: ApiV3Key,
    pub verifier: Verifier,
    /// What sensitive request fields (a payee's name) are encrypted to: the platform public
    /// key, or else the platform certificate's key; its id goes out as `Wechatpay-Serial`.
    sensitive_key: Option<PublicKey>,
}

impl Upstream {
    /// Opens `merchant`'s connection, sending on `http` (the node's one client to WeChat).
    pub fn open(
        merchant: MerchantRow,
        master: &MasterKey,
        calls: &CallSettings,
        http: &reqwest::Client,
    ) -> anyhow::Result<Self> {
        let secrets: SealedSecrets =
            serde_json::from_slice(&master.open(&merchant.secrets_sealed)?)?;
        let mut verifier = Verifier::new();
        // (key, its id): the public key first, the certificate otherwise.
        let mut sensitive = None;
        if let Some(pem) = &merchant.platform_certificate {
            let certificate = Certificate::from_pem(pem)?;
            sensitive = Some((
                certificate.public_key.clone(),
                certificate.serial_no.clone(),
            ));
            verifier.add_certificate(certificate);
        }
        if let (Some(id), Some(pem)) = (
            &merchant.platform_public_key_id,
            &merchant.platform_public_key,
        ) {
            let key = PublicKey::from_spki_pem(pem)?;
            verifier.add_public_key(id.clone(), key.clone());
            sensitive = Some((key, id.clone()));
        }
        let signer = MerchantSigner {
            mchid: merchant.mchid.clone(),
            serial_no: merchant.merchant_serial_no.clone(),
            key: PrivateKey::from_pkcs8_pem(&secrets.merchant_private_key)?,
        };
        let mut config = ClientConfig::new(
            url::Url::parse(&merchant.api_base_url)?,
            signer,
            verifier.clone(),
        );
        config.apiv3_key = Some(ApiV3Key::new(&secrets.apiv3_key)?);
        config.wechatpay_serial = sensitive.as_ref().map(|(_, id)| id.clone());
        config.timeout = calls.timeout;
        let pace = Arc::new(Pace::per_second(calls.per_second));
        config.observer = Some(pace.clone().observer(calls.observer.clone()));
        config.retry_backoff = Duration::from_millis(100);
        Ok(Self {
            client: Client::with_http(config, http.clone(), Arc::new(SystemClock)),
            app_secret: secrets.app_secret,
            http: http.clone(),
            timeout: calls.timeout,
            pace,
            signing_key: PrivateKey::from_pkcs8_pem(&secrets.merchant_private_key)?,
            apiv3_key: ApiV3Key::new(&secrets.apiv3_key)?,
            verifier,
            sensitive_key: sensitive.map(|(key, _)| key),
            merchant,
        })
    }

    /// A sensitive field (a payee's name) encrypted for WeChat (RSA-OAEP, base64).
    pub fn encrypt_sensitive(&self, plaintext: &str) -> anyhow::Result<String> {
        let key = self
            .sensitive_key
            .as_ref()
            .context("the merchant has no platform key to encrypt with")?;
        Ok(key.encrypt_oaep(plaintext.as_bytes())?)
    }
}

/// How a node calls WeChat for every merchant.
#[derive(Clone)]
pub struct CallSettings {
    pub timeout: Duration,
    /// Orders per second per merchant from this node, the other APIs in proportion (see
    /// [`crate::pace`]).
    pub per_second: NonZeroU32,
    pub observer: Option<CallObserver>,
}

impl Upstream {
    /// The client to WeChat, once this call's turn at `api` has come (one call per turn; see
    /// [`crate::pace`]).
    pub async fn client(&self, api: Api) -> &Client {
        self.pace.turn(api).await;
        &self.client
    }

    /// Where webpage authorization happens: WeChat's hosts for a live merchant, the simulator
    /// for a sandbox one.
    fn oauth_bases(&self) -> (String, String) {
        if self.merchant.mode == MerchantMode::Sandbox {
            let base = self.merchant.api_base_url.trim_end_matches('/').to_string();
            (base.clone(), base)
        } else {
            (
                "https://open.weixin.qq.com".into(),
                "https://api.weixin.qq.com".into(),
            )
        }
    }

    /// Whether the hosted checkout can learn a payer's openid (the AppSecret is known).
    pub fn can_authorize(&self) -> bool {
        self.app_secret.is_some()
    }

    /// The webpage-authorization URL (silent `snsapi_base`) that comes back to `redirect_uri`
    /// with a code.
    pub fn authorize_url(&self, redirect_uri: &str, state: &str) -> String {
        let (open, _) = self.oauth_bases();
        let mut url =
            url::Url::parse(&format!("{open}/connect/oauth2/authorize")).expect("a valid base URL");
        url.query_pairs_mut()
            .append_pair("appid", &self.merchant.appid)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("response_type", "code")
            .append_pair("scope", "snsapi_base")
            .append_pair("state", state);
        format!("{url}#wechat_redirect")
    }

    /// Exchanges a webpage-authorization code for the payer's openid.
    pub async fn openid_for_code(&self, code: &str) -> anyhow::Result<String> {
        let secret = self
            .app_secret
            .as_deref()
            .context("the merchant has no AppSecret")?;
        let (_, api) = self.oauth_bases();
        let mut url = url::Url::parse(&format!("{api}/sns/oauth2/access_token"))?;
        url.query_pairs_mut()
            .append_pair("appid", &self.merchant.appid)
            .append_pair("secret", secret)
            .append_pair("code", code)
            .append_pair("grant_type", "authorization_code");
        let answer: serde_json::Value = self
            .http
            .get(url)
            .timeout(self.timeout)
            .send()
            .await
            // The URL carries the AppSecret: never in an error.
            .map_err(|e| anyhow::anyhow!("webpage authorization failed: {}", e.without_url()))?
            .json()
            .await
            .map_err(|e| anyhow::anyhow!("webpage authorization failed: {}", e.without_url()))?;
        if let Some(openid) = answer["openid"].as_str() {
            return Ok(openid.to_string());
        }
        let errcode = answer["errcode"].as_i64().unwrap_or_default();
        if CODE_REFUSED.contains(&errcode) {
            return Err(CodeRefused(errcode).into());
        }
        anyhow::bail!("WeChat did not give an openid (errcode {errcode})")
    }

    /// Whether this merchant goes through WeChat's cross-border (`/v3/global/`) endpoints.
    pub fn cross_border(&self) -> bool {
        self.merchant.merchant_category_code.is_some()
    }

    /// Asks WeChat for the payment credential of `req` as `integration`, at the endpoint for
    /// the merchant's region (a cross-border one carries its merchant category code).
    pub async fn prepay(
        &self,
        integration: Integration,
        req: PrepayRequest,
    ) -> Result<Prepaid, ClientError> {
        if let Some(mcc) = &self.merchant.merchant_category_code {
            return self.global_prepay(integration, mcc, req).await;
        }
        let client = self.client(Api::Order).await;
        Ok(match integration {
            Integration::Native => Prepaid::Native {
                code_url: client.prepay_native(&req).await?.code_url,
            },
            Integration::H5 => Prepaid::H5 {
                h5_url: client.prepay_h5(&req).await?.h5_url,
            },
            Integration::Jsapi => Prepaid::Jsapi {
                prepay_id: client.prepay_jsapi(&req).await?.prepay_id,
            },
            Integration::MiniProgram => Prepaid::MiniProgram {
                prepay_id: client.prepay_jsapi(&req).await?.prepay_id,
            },
            Integration::App => Prepaid::App {
                prepay_id: client.prepay_app(&req).await?.prepay_id,
            },
        })
    }

    /// The same order at `/v3/global/transactions/…`, with the merchant category code.
    async fn global_prepay(
        &self,
        integration: Integration,
        mcc: &str,
        req: PrepayRequest,
    ) -> Result<Prepaid, ClientError> {
        let kind = match integration {
            Integration::Native => GlobalKind::Native,
            Integration::H5 => GlobalKind::Mweb,
            Integration::Jsapi | Integration::MiniProgram => GlobalKind::Jsapi,
            Integration::App => GlobalKind::App,
        };
        let global = GlobalPrepayRequest {
            appid: req.appid,
            mchid: req.mchid,
            description: req.description,
            out_trade_no: req.out_trade_no,
            trade_type: kind.trade_type().into(),
            merchant_category_code: mcc.to_string(),
            time_expire: req.time_expire,
            attach: req.attach,
            notify_url: req.notify_url,
            amount: req.amount,
            payer: req.payer,
            scene_info: req.scene_info,
            ..Default::default()
        };
        let answer = self
            .client(Api::Order)
            .await
            .global_prepay(kind, &global)
            .await?;
        let field = |name: &str| {
            answer[name]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| ClientError::Decode(format!("the prepay answer has no {name}")))
        };
        Ok(match integration {
            Integration::Native => Prepaid::Native {
                code_url: field("code_url")?,
            },
            Integration::H5 => Prepaid::H5 {
                h5_url: field("h5_url")?,
            },
            Integration::Jsapi => Prepaid::Jsapi {
                prepay_id: field("prepay_id")?,
            },
            Integration::MiniProgram => Prepaid::MiniProgram {
                prepay_id: field("prepay_id")?,
            },
            Integration::App => Prepaid::App {
                prepay_id: field("prepay_id")?,
            },
        })
    }

    /// Queries an order by out_trade_no, at the endpoint for the merchant's region.
    pub async fn query(&self, out_trade_no: &str) -> Result<Transaction, ClientError> {
        if self.cross_border() {
            self.client(Api::Query)
                .await
                .global_query_by_out_trade_no(out_trade_no)
                .await
        } else {
            self.client(Api::Query)
                .await
                .query_by_out_trade_no(out_trade_no)
                .await
        }
    }

    /// Closes an order, at the endpoint for the merchant's region.
    pub async fn close(&self, out_trade_no: &str) -> Result<(), ClientError> {
        if self.cross_border() {
            self.client(Api::Order)
                .await
                .global_close(out_trade_no)
                .await
        } else {
            self.client(Api::Order).await.close(out_trade_no).await
        }
    }

    /// Requests a refund; a cross-border merchant's goes to `/v3/global/refunds` and its answer
    /// is read as a domestic one (the fields the gateway checks are the same).
    pub async fn refund(&self, req: &RefundRequest) -> Result<Refund, ClientError> {
        if !self.cross_border() {
            return self.client(Api::Refund).await.refund(req).await;
        }
        let global = GlobalRefundRequest {
            mchid: self.merchant.mchid.clone(),
            appid: self.merchant.appid.clone(),
            transaction_id: req.transaction_id.clone(),
            out_trade_no: req.out_trade_no.clone(),
            out_refund_no: req.out_refund_no.clone(),
            reason: req.reason.clone(),
            notify_url: req.notify_url.clone(),
            amount: GlobalRefundAmountRequest {
                refund: req.amount.refund,
                total: req.amount.total,
                currency: req.amount.currency.clone(),
            },
        };
        self.client(Api::Refund)
            .await
            .global_refund(&global)
            .await
            .map(from_global)
    }

    /// Queries a refund by out_refund_no, at the endpoint for the merchant's region.
    pub async fn query_refund(&self, out_refund_no: &str) -> Result<Refund, ClientError> {
        if self.cross_border() {
            self.client(Api::Refund)
                .await
                .global_query_refund(out_refund_no)
                .await
                .map(from_global)
        } else {
            self.client(Api::Refund)
                .await
                .query_refund(out_refund_no)
                .await
        }
    }
}

fn from_global(g: GlobalRefund) -> Refund {
    Refund {
        refund_id: g.id,
        out_refund_no: g.out_refund_no,
        transaction_id: g.transaction_id,
        out_trade_no: g.out_trade_no,
        channel: g.channel,
        user_received_account: g.recv_account,
        success_time: g.success_time,
        create_time: g.create_time,
        status: g.status,
        amount: RefundAmount {
            total: g.amount.total,
            refund: g.amount.refund,
            payer_refund: g.amount.payer_refund,
            currency: Some(g.amount.currency),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// WeChat's errcodes for a webpage-authorization code it will not take: invalid (made up or
/// expired) and used already.
const CODE_REFUSED: [i64; 2] = [40029, 40163];

/// WeChat refused the webpage-authorization code itself (the caller's fault, not the
/// merchant's set-up or the call's): `openid_for_code`'s error then downcasts to this.
#[derive(Debug, thiserror::Error)]
#[error("WeChat refused the authorization code (errcode {0})")]
pub struct CodeRefused(pub i64);

/// A merchant's connection, once opened.
type Opened = Arc<OnceCell<Arc<Upstream>>>;

/// `Upstreams::get`'s error when no merchant has the id: a request naming it is refused as
/// unknown, not retried. Its other errors are the store's (`StoreError`: try again) or the
/// merchant's credentials failing to open.
#[derive(Debug, thiserror::Error)]
#[error("no merchant {0}")]
pub struct NoMerchant(pub String);

/// Open connections, one per merchant, made on first use: calls that come while it is being
/// made wait for it rather than make their own. They all send on one HTTP client, made with
/// the first (making one loads the system's root certificates).
pub struct Upstreams {
    calls: CallSettings,
    http: OnceCell<reqwest::Client>,
    open: Mutex<HashMap<String, Opened>>,
}

impl Upstreams {
    pub fn new(calls: CallSettings) -> Self {
        Self {
            calls,
            http: OnceCell::new(),
            open: Mutex::default(),
        }
    }

    pub async fn get(
        &self,
        store: &Store,
        master: &MasterKey,
        merchant_id: &str,
    ) -> anyhow::Result<Arc<Upstream>> {
        let opened = {
            let mut open = self.open.lock().expect("upstreams lock");
            // Every call looks its merchant up; only the first makes the key.
            match open.get(merchant_id) {
                Some(opened) => opened.clone(),
                None => open.entry(merchant_id.to_string()).or_default().clone(),
            }
        };
        let upstream = opened
            .get_or_try_init(|| async {
                let row = store
                    .merchant(merchant_id)
                    .await?
                    .ok_or_else(|| NoMerchant(merchant_id.to_string()))?;
                let http = self
                    .http
                    .get_or_try_init(|| async { http_client(ClientConfig::CONNECT_TIMEOUT) })
                    .await?;
                anyhow::Ok(Arc::new(Upstream::open(row, master, &self.calls, http)?))
            })
            .await;
        match upstream {
            Ok(upstream) => Ok(upstream.clone()),
            Err(e) => {
                self.forget_unopened(merchant_id, &opened);
                Err(e)
            }
        }
    }

    /// Takes back the place made for `merchant_id` if it is still `opened` and nothing opened
    /// it: an id that names no merchant (callbacks name theirs in a public URL) keeps nothing.
    fn forget_unopened(&self, merchant_id: &str, opened: &Opened) {
        let mut open = self.open.lock().expect("upstreams lock");
        if open
            .get(merchant_id)
            .is_some_and(|kept| Arc::ptr_eq(kept, opened) && kept.get().is_none())
        {
            open.remove(merchant_id);
        }
    }

    /// How many merchants have a place here, opened or being opened.
    pub fn kept(&self) -> usize {
        self.open.lock().expect("upstreams lock").len()
    }
}
