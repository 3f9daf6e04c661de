//! What operators read: the metrics exposition, with the database's figures as they are now.

use crate::error::ApiResult;
use crate::gateway::Gateway;

/// The `/metrics` text.
pub async fn metrics(gw: &Gateway) -> ApiResult<String> {
    let ops = gw.store().ops_snapshot(gw.now_ms()).await?;
    Ok(gw.metrics().render(&ops))
}
