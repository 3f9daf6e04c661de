//! Typed requests and answers. Field names are WeChat's own; optional fields are skipped when
//! absent so that what is sent is what WeChat documents. Each request has a `validate` that
//! applies WeChat's field rules before anything is sent.

pub mod bill;
pub mod certificate;
pub mod encode;
pub mod global;
pub mod pay;
pub mod refund;
pub mod transfer;

pub use bill::*;
pub use certificate::*;
pub use encode::{path_segment, query_value};
pub use global::*;
pub use pay::*;
pub use refund::*;
pub use transfer::*;
