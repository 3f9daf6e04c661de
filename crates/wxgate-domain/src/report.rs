//! Reports: what a merchant can download over a range of days.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    Payments,
    Refunds,
    BalanceTransactions,
    Reconciliation,
}

impl ReportKind {
    pub const ALL: [ReportKind; 4] = [
        Self::Payments,
        Self::Refunds,
        Self::BalanceTransactions,
        Self::Reconciliation,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Payments => "payments",
            Self::Refunds => "refunds",
            Self::BalanceTransactions => "balance_transactions",
            Self::Reconciliation => "reconciliation",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

try_from_string!(ReportKind, "report type");
