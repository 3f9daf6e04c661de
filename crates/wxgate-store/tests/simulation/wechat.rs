//! WeChat as the simulation sees it: orders, refunds and the notifications it sends, kept in
//! memory and answering as WeChat's rules say. Which answer reaches the gateway (or is lost
//! after WeChat acted) is the scheduler's choice, not this model's.

use std::collections::BTreeMap;

/// How one call to WeChat ends, as the gateway sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// WeChat acted and the answer arrived.
    Answered,
    /// WeChat acted, but the answer was lost (a timeout after commit).
    LostAfterCommit,
    /// The request never reached WeChat.
    LostBefore,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub amount: i64,
    /// The payer has the code: the prepay answer reached the gateway and its client.
    pub payable: bool,
    /// The transaction that paid it.
    pub paid: Option<String>,
    pub closed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundState {
    Processing,
    Success,
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    pub out_trade_no: String,
    pub amount: i64,
    pub state: RefundState,
    pub refund_id: String,
}

/// What WeChat says to a refund request that reached it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundAnswer {
    Accepted(String),
    /// The order is not paid, or the refunds would exceed what was paid.
    Refused,
}

#[derive(Debug, Default)]
pub struct WeChat {
    pub orders: BTreeMap<String, Order>,
    pub refunds: BTreeMap<String, Refund>,
    /// Payment notifications on their way: (out_trade_no, transaction_id).
    pub paid_notes: Vec<(String, String)>,
    /// Refund notifications on their way: out_refund_no.
    pub refund_notes: Vec<String>,
    next_no: u64,
}

impl WeChat {
    fn next(&mut self, prefix: &str) -> String {
        self.next_no += 1;
        format!("{prefix}{:010}", self.next_no)
    }

    /// A prepay that reached WeChat makes the order; only an answered one is payable.
    pub fn prepay(&mut self, out_trade_no: &str, amount: i64, fate: Fate) {
        if fate == Fate::LostBefore {
            return;
        }
        self.orders.insert(
            out_trade_no.to_string(),
            Order {
                amount,
                payable: fate == Fate::Answered,
                paid: None,
                closed: false,
            },
        );
    }

    /// A payer pays an open order: its transaction id. The notification is the caller's.
    pub fn pay(&mut self, out_trade_no: &str) -> Option<String> {
        let open = self
            .orders
            .get(out_trade_no)
            .is_some_and(|o| o.payable && o.paid.is_none() && !o.closed);
        if !open {
            return None;
        }
        let tx = self.next("4200");
        self.orders.get_mut(out_trade_no)?.paid = Some(tx.clone());
        Some(tx)
    }

    /// Closes an order: `Err(transaction)` when it was paid first. An order WeChat never got
    /// is closed too (it can never be paid).
    pub fn close(&mut self, out_trade_no: &str) -> Result<(), String> {
        let order = self
            .orders
            .entry(out_trade_no.to_string())
            .or_insert(Order {
                amount: 0,
                payable: false,
                paid: None,
                closed: false,
            });
        match &order.paid {
            Some(tx) => Err(tx.clone()),
            None => {
                order.closed = true;
                Ok(())
            }
        }
    }

    /// A refund request that reached WeChat. The same out_refund_no is the same refund.
    pub fn refund(&mut self, out_trade_no: &str, out_refund_no: &str, amount: i64) -> RefundAnswer {
        if let Some(r) = self.refunds.get(out_refund_no) {
            return RefundAnswer::Accepted(r.refund_id.clone());
        }
        let Some(paid) = self.orders.get(out_trade_no).filter(|o| o.paid.is_some()) else {
            return RefundAnswer::Refused;
        };
        let held: i64 = self
            .refunds
            .values()
            .filter(|r| r.out_trade_no == out_trade_no && r.state != RefundState::Closed)
            .map(|r| r.amount)
            .sum();
        if held + amount > paid.amount {
            return RefundAnswer::Refused;
        }
        let refund_id = self.next("5030");
        self.refunds.insert(
            out_refund_no.to_string(),
            Refund {
                out_trade_no: out_trade_no.to_string(),
                amount,
                state: RefundState::Processing,
                refund_id: refund_id.clone(),
            },
        );
        RefundAnswer::Accepted(refund_id)
    }

    /// The processing refunds, in a stable order.
    pub fn processing(&self) -> Vec<String> {
        self.refunds
            .iter()
            .filter(|(_, r)| r.state == RefundState::Processing)
            .map(|(no, _)| no.clone())
            .collect()
    }

    /// The orders a payer could pay now, in a stable order.
    pub fn open_orders(&self) -> Vec<String> {
        self.orders
            .iter()
            .filter(|(_, o)| o.payable && o.paid.is_none() && !o.closed)
            .map(|(no, _)| no.clone())
            .collect()
    }
}
