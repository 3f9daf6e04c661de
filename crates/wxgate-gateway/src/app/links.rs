//! Payment links: permanent URLs whose Pay button makes a new hosted payment each time.

use wxgate_domain::id::{LinkId, MerchantId};
use wxgate_domain::{Currency, Money, PaymentIntegration, id};
use wxgate_store::{Flag, PaymentLinkRow, PaymentRow};

use crate::app::payments::{self as pay, NewPayment};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::gateway::Gateway;

/// A link to create, every value already checked at the edge.
#[derive(Debug, Clone)]
pub struct NewLink {
    pub currency: Currency,
    /// A fixed amount, or bounds for the amount the payer enters.
    pub amount: Option<i64>,
    pub amount_min: Option<i64>,
    pub amount_max: Option<i64>,
    pub description: String,
    pub return_url: Option<String>,
    pub max_uses: Option<i64>,
    pub expires_at: Option<i64>,
    /// The merchant's own reference, unique per merchant (a front door names links by it).
    pub merchant_reference: Option<String>,
}

pub async fn create(
    gw: &Gateway,
    merchant_id: &MerchantId,
    new: NewLink,
) -> ApiResult<PaymentLinkRow> {
    let now = gw.now_ms();
    if new.expires_at.is_some_and(|e| e <= now) {
        return Err(ApiError::invalid(
            ErrorCode::InvalidExpiresAt,
            "expires_at",
            "expires_at must be in the future",
        ));
    }
    let token = id::generate("pl");
    let row = PaymentLinkRow {
        id: id::generate("plink"),
        merchant_id: merchant_id.to_string(),
        url: format!(
            "{}/pay/{token}",
            gw.config().public_base_url.trim_end_matches('/')
        ),
        token,
        currency: new.currency.code().to_string(),
        amount: new.amount,
        amount_min: new.amount_min,
        amount_max: new.amount_max,
        description: new.description,
        return_url: new.return_url,
        max_uses: new.max_uses,
        uses: 0,
        expires_at: new.expires_at,
        active: Flag::YES,
        created_at: now,
        merchant_reference: new.merchant_reference,
    };
    if let Some(reference) = &row.merchant_reference
        && gw
            .store()
            .payment_link_by_reference(merchant_id, reference)
            .await?
            .is_some()
    {
        return Err(ApiError::invalid(
            ErrorCode::MerchantOrderIdTaken,
            "merchant_reference",
            "this reference names another link",
        ));
    }
    gw.store().insert_payment_link(&row).await?;
    Ok(row)
}

/// The merchant's link with this reference.
pub async fn by_reference(
    gw: &Gateway,
    merchant_id: &str,
    reference: &str,
) -> ApiResult<Option<PaymentLinkRow>> {
    Ok(gw
        .store()
        .payment_link_by_reference(merchant_id, reference)
        .await?)
}

/// One of the merchant's links.
pub async fn get(gw: &Gateway, merchant_id: &MerchantId, id: &LinkId) -> ApiResult<PaymentLinkRow> {
    gw.store()
        .payment_link(merchant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("payment link"))
}

/// The merchant's links, newest first: `limit` of them after the link `starting_after` (and
/// one more, which only says that more follow).
pub async fn list(
    gw: &Gateway,
    merchant_id: &MerchantId,
    starting_after: Option<&str>,
    limit: i64,
) -> ApiResult<Vec<PaymentLinkRow>> {
    let after = match starting_after {
        Some(id) => {
            let link = gw
                .store()
                .payment_link(merchant_id, id)
                .await?
                .ok_or_else(|| {
                    ApiError::invalid(
                        ErrorCode::InvalidCursor,
                        "starting_after",
                        "no such payment link",
                    )
                })?;
            Some((link.created_at, link.id))
        }
        None => None,
    };
    Ok(gw
        .store()
        .payment_links(merchant_id, after, limit + 1)
        .await?)
}

/// Stops a link from taking payments.
pub async fn deactivate(
    gw: &Gateway,
    merchant_id: &MerchantId,
    id: &LinkId,
) -> ApiResult<PaymentLinkRow> {
    let mut link = get(gw, merchant_id, id).await?;
    gw.store().deactivate_payment_link(merchant_id, id).await?;
    link.active = Flag::NO;
    Ok(link)
}

/// The payments made through a link, newest first, paged like [`list`].
pub async fn payments(
    gw: &Gateway,
    link: &PaymentLinkRow,
    starting_after: Option<&str>,
    limit: i64,
) -> ApiResult<Vec<PaymentRow>> {
    let after = match starting_after {
        Some(pid) => {
            let p = gw.store().payment(&link.merchant_id, pid).await?;
            let p = p.filter(|p| p.payment_link_id.as_deref() == Some(link.id.as_str()));
            let p = p.ok_or_else(|| {
                ApiError::invalid(
                    ErrorCode::InvalidCursor,
                    "starting_after",
                    "no such payment of this link",
                )
            })?;
            Some((p.created_at, p.id))
        }
        None => None,
    };
    Ok(gw
        .store()
        .payments_of_link(&link.merchant_id, &link.id, after, limit + 1)
        .await?)
}

/// What a visit to a link's page finds.
pub enum Visit {
    Open(Box<PaymentLinkRow>),
    /// Deactivated, used up, or expired.
    Closed,
    Missing,
}

pub async fn visit(gw: &Gateway, token: &str) -> ApiResult<Visit> {
    let Some(link) = gw.store().payment_link_by_token(token).await? else {
        return Ok(Visit::Missing);
    };
    if !is_open(gw, &link) {
        return Ok(Visit::Closed);
    }
    Ok(Visit::Open(Box::new(link)))
}

/// Whether a link still takes payments: active, not used up, not expired.
pub fn is_open(gw: &Gateway, link: &PaymentLinkRow) -> bool {
    let used_up = link.max_uses.is_some_and(|m| link.uses >= m);
    let expired = link.expires_at.is_some_and(|e| e <= gw.now_ms());
    link.active.is_set() && !used_up && !expired
}

/// The link's currency (checked when the link was made).
pub fn currency(link: &PaymentLinkRow) -> Currency {
    Currency::parse(&link.currency).unwrap_or(Currency::CNY)
}

/// Takes a use of the link and makes its hosted payment: the payment's checkout URL, or `None`
/// when the link was used up meanwhile.
pub async fn pay(gw: &Gateway, link: &PaymentLinkRow, amount: i64) -> ApiResult<Option<String>> {
    if !gw.store().use_payment_link(&link.id, gw.now_ms()).await? {
        return Ok(None);
    }
    let merchant = gw
        .store()
        .merchant(&link.merchant_id)
        .await?
        .ok_or_else(|| ApiError::not_found("merchant"))?;
    let new = NewPayment {
        money: Money::new(amount, currency(link))
            .map_err(|e| ApiError::invalid(ErrorCode::InvalidAmount, "amount", e.to_string()))?,
        merchant_order_id: id::generate("pl"),
        description: link.description.clone(),
        integration: PaymentIntegration::Hosted,
        openid: None,
        client_ip: None,
        expires_at: gw.now_ms() + pay::PAYMENT_LIFETIME_MAX_MS,
        return_url: link.return_url.clone(),
        cancel_url: None,
        notify_url: None,
        metadata: Default::default(),
        attach: None,
        payment_link_id: Some(link.id.clone()),
        door: None,
    };
    let created = pay::create(gw, &merchant, new).await?;
    Ok(created.state.payment.hosted_url)
}
