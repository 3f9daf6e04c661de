//! Prefixed, opaque identifiers: `pay_…`, `mch_…`, `key_…`, `evt_…`.

use rand::Rng;

const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
const RANDOM_LEN: usize = 24;

/// A new id: the prefix, an underscore and 24 random characters of `[0-9a-z]` (~124 bits).
pub fn generate(prefix: &str) -> String {
    let mut rng = rand::rng();
    let tail: String = (0..RANDOM_LEN)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}_{tail}")
}

/// Whether `value` has the shape of an id with `prefix` (it may still not exist).
pub fn is_valid(prefix: &str, value: &str) -> bool {
    value
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|tail| tail.len() == RANDOM_LEN && tail.bytes().all(|b| ALPHABET.contains(&b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_and_checkable() {
        let id = generate("pay");
        assert!(id.starts_with("pay_") && id.len() == 28);
        assert!(is_valid("pay", &id));
        assert!(!is_valid("mch", &id));
        assert!(!is_valid("pay", "pay_short"));
        assert!(!is_valid("pay", "pay_ABCDEFGHIJKLMNOPQRSTUVWX"));
        assert_ne!(generate("pay"), generate("pay"));
    }
}
