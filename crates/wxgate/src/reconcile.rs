//! `wxgate reconcile`: reconciles a merchant's days against WeChat's bills now, one day after
//! another, with a progress bar on a terminal; the same work as `POST /v1/reconciliations`.

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use time::Date;
use wxgate_domain::id::{MerchantId, ReconciliationId};
use wxgate_gateway::Gateway;
use wxgate_gateway::app::reconciliation as recon;
use wxgate_store::ReconciliationRow;

/// The most days one run reconciles: WeChat keeps 90 days of bills.
const MAX_DAYS: i64 = 91;

#[derive(Debug, clap::Args)]
pub struct ReconcileArgs {
    /// The merchant (mch_...).
    #[arg(long)]
    merchant: String,
    /// The bill day, YYYY-MM-DD in Asia/Shanghai (the first of a range with --to).
    #[arg(long, value_parser = parse_date)]
    date: Date,
    /// The last day of a range (inclusive).
    #[arg(long, value_parser = parse_date)]
    to: Option<Date>,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

fn parse_date(value: &str) -> Result<Date, String> {
    wechatpay_v3::validate::bill_date("date", value).map_err(|e| e.issue)
}

/// The days from `first` to `last`, inclusive.
fn days(first: Date, last: Date) -> anyhow::Result<Vec<Date>> {
    anyhow::ensure!(last >= first, "--to is before --date");
    anyhow::ensure!(
        (last - first).whole_days() < MAX_DAYS,
        "at most {MAX_DAYS} days at once"
    );
    let mut out = vec![first];
    while let Some(next) = out.last().and_then(|d| d.next_day()).filter(|d| *d <= last) {
        out.push(next);
    }
    Ok(out)
}

pub async fn run(gw: &Gateway, args: ReconcileArgs) -> anyhow::Result<()> {
    let merchant = MerchantId::parse(&args.merchant).context("--merchant is not a mch_… id")?;
    let days = days(args.date, args.to.unwrap_or(args.date))?;
    let bar = ProgressBar::new(days.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} days  {msg}").expect("a valid template"),
    );
    let mut done = Vec::new();
    for day in days {
        bar.set_message(day.to_string());
        let (r, _) = recon::request(gw, &merchant, day)
            .await
            .map_err(|e| anyhow::anyhow!("{day}: {}: {}", e.code, e.message))?;
        let id = ReconciliationId::stored(&r.id);
        done.push(recon::run_now(gw, &merchant, &id).await?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    for r in &done {
        println!("{}", line(r, args.json));
    }
    Ok(())
}

fn line(r: &ReconciliationRow, json: bool) -> String {
    let view = wxgate_gateway::views::money::reconciliation(r, None);
    if json {
        return view.to_string();
    }
    let note = match r.status {
        wxgate_domain::reconciliation::ReconciliationStatus::Completed => format!(
            "{} discrepancies, {} repaired",
            r.discrepancy_count, r.repaired_count
        ),
        _ => r.last_error.clone().unwrap_or_default(),
    };
    format!("{}  {}  {}  {note}", r.bill_date, r.id, r.status.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_inclusive_and_bounded() {
        let d = |s: &str| parse_date(s).unwrap();
        assert_eq!(days(d("2026-02-27"), d("2026-03-01")).unwrap().len(), 3);
        assert_eq!(days(d("2026-03-01"), d("2026-03-01")).unwrap().len(), 1);
        assert!(days(d("2026-03-02"), d("2026-03-01")).is_err());
        assert!(days(d("2026-01-01"), d("2026-06-01")).is_err());
        assert!(parse_date("2026-02-30").is_err());
    }
}
