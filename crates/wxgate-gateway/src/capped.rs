//! The in-memory caches' one rule: a cache holds at most a fixed number of entries, and a full
//! one is cleared before the next insert (its entries are made again on their next use), so
//! nothing a caller names grows a node without bound.

use std::collections::HashMap;
use std::hash::Hash;

/// Inserts into `cache`, cleared first if it holds `max` entries.
pub fn insert_capped<K: Hash + Eq, V>(cache: &mut HashMap<K, V>, max: usize, key: K, value: V) {
    if cache.len() >= max {
        cache.clear();
    }
    cache.insert(key, value);
}
