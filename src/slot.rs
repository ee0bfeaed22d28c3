//! Slot ids: the random `/user/<slot>/` path segment of a container.

use std::fmt;

use rand::RngCore;

/// A validated slot id: 16 lowercase hex characters (64 random bits). Never a
/// username, so URLs reveal nothing and cannot be guessed. Held inline: every
/// proxied request parses one.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotId([u8; 16]);

impl SlotId {
    pub fn random() -> Self {
        let mut bytes = [0u8; 8];
        rand::rng().fill_bytes(&mut bytes);
        let mut id = [0u8; 16];
        hex::encode_to_slice(bytes, &mut id).expect("8 bytes are 16 hex digits");
        Self(id)
    }

    /// Accept only exactly what [`SlotId::random`] makes.
    pub fn parse(s: &str) -> Option<Self> {
        let id: [u8; 16] = s.as_bytes().try_into().ok()?;
        id.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)).then_some(Self(id))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("a slot id is ASCII hex")
    }

    /// The Jupyter server's base URL for this slot.
    pub fn base_url(&self) -> String {
        format!("/user/{self}/")
    }
}

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SlotId({})", self.as_str())
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
