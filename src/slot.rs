//! Slot ids: the random `/user/<slot>/` path segment of a container.

use std::fmt;

use rand::RngCore;

/// A validated slot id: 16 lowercase hex characters (64 random bits). Never a
/// username, so URLs reveal nothing and cannot be guessed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotId(String);

impl SlotId {
    pub fn random() -> Self {
        let mut bytes = [0u8; 8];
        rand::rng().fill_bytes(&mut bytes);
        Self(hex::encode(bytes))
    }

    /// Accept only exactly what [`SlotId::random`] makes.
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 16 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            .then(|| Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The Jupyter server's base URL for this slot.
    pub fn base_url(&self) -> String {
        format!("/user/{}/", self.0)
    }
}

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A random secret of 32 bytes, hex-encoded: Jupyter tokens.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_everything_else() {
        let id = SlotId::random();
        assert_eq!(SlotId::parse(id.as_str()), Some(id.clone()));
        assert_ne!(SlotId::random(), id);
        for bad in [
            "",
            "..",
            "0123456789abcdeF",
            "0123456789abcde",
            "0123456789abcdef0",
            "0123456789abcde/",
            "%2e%2e",
        ] {
            assert_eq!(SlotId::parse(bad), None, "{bad}");
        }
    }
}
