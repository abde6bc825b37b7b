//! Typed identifiers. Each one validates on construction so that a value of
//! the type is always well formed.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdError {
    #[error(
        "invalid {kind} {value:?}: use 1-63 characters of lowercase letters, digits, '-' and '_', starting with a letter or digit"
    )]
    InvalidName { kind: &'static str, value: String },
    #[error("invalid digest {0:?}: expected \"sha256:\" followed by 64 lowercase hex characters")]
    InvalidDigest(String),
    #[error("invalid {kind} {value:?}: expected 32 lowercase hex characters")]
    InvalidHexId { kind: &'static str, value: String },
}

fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_')
}

macro_rules! name_type {
    ($(#[$m:meta])* $name:ident, $kind:literal) => {
        $(#[$m])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                if valid_name(&s) {
                    Ok(Self(s))
                } else {
                    Err(IdError::InvalidName { kind: $kind, value: s })
                }
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }
    };
}

name_type!(
    /// A tenant. Every stored thing belongs to one; `default` always exists.
    Namespace,
    "namespace"
);
name_type!(
    /// The name of a function, unique within its namespace.
    FunctionName,
    "function name"
);
name_type!(
    /// The name of a trigger (a cron schedule or a topic subscription).
    TriggerName,
    "trigger name"
);
name_type!(
    /// The name of a topic that events are published to.
    TopicName,
    "topic name"
);

impl Namespace {
    pub fn default_ns() -> Self {
        Self("default".to_string())
    }
}

impl Default for Namespace {
    fn default() -> Self {
        Self::default_ns()
    }
}

/// A content address: `sha256:` + 64 hex characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::{Digest as _, Sha256};
        Self(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = s.strip_prefix("sha256:").is_some_and(|h| {
            h.len() == 64
                && h.bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        });
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(IdError::InvalidDigest(s.to_string()))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The hex part, safe to use as a file name.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }
}

impl TryFrom<String> for Digest {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}
impl From<Digest> for String {
    fn from(v: Digest) -> String {
        v.0
    }
}
impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Identifies one invocation. Time-ordered: 12 hex digits of milliseconds
/// since the epoch, then 20 random hex digits, so ids sort by start time.
macro_rules! hex_id {
    ($(#[$m:meta])* $name:ident, $kind:literal) => {
        $(#[$m])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// A new id: 48 bits of milliseconds then 80 random bits, so ids
            /// sort by creation time.
            pub fn generate() -> Self {
                let ms = crate::time::now_ms() as u64 & 0xffff_ffff_ffff;
                let r: u128 = rand::random::<u128>() & ((1u128 << 80) - 1);
                Self(format!("{ms:012x}{r:020x}"))
            }
            pub fn parse(s: &str) -> Result<Self, IdError> {
                if s.len() == 32
                    && s.bytes()
                        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
                {
                    Ok(Self(s.to_string()))
                } else {
                    Err(IdError::InvalidHexId { kind: $kind, value: s.to_string() })
                }
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(&s)
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

hex_id!(
    /// The id of one activation (one run of a function).
    ActivationId,
    "activation id"
);
hex_id!(
    /// The id of one queued delivery: an async invocation, or one
    /// subscriber's copy of an event. Stable across retries, the
    /// dead-letter queue and replays.
    DeliveryId,
    "delivery id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(FunctionName::new("hello").is_ok());
        assert!(FunctionName::new("a-b_c9").is_ok());
        assert!(FunctionName::new("").is_err());
        assert!(FunctionName::new("Hello").is_err());
        assert!(FunctionName::new("-x").is_err());
        assert!(FunctionName::new("a/b").is_err());
        assert!(FunctionName::new("x".repeat(64)).is_err());
    }

    #[test]
    fn digest_round_trip() {
        let d = Digest::of(b"abc");
        assert_eq!(
            d.as_str(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Digest::parse(d.as_str()).unwrap(), d);
        assert!(Digest::parse("sha256:zz").is_err());
        assert!(Digest::parse("md5:00").is_err());
    }

    #[test]
    fn activation_ids_sort_by_time() {
        let a = ActivationId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = ActivationId::generate();
        assert!(a < b);
        assert!(ActivationId::parse(a.as_str()).is_ok());
        assert!(ActivationId::parse("xyz").is_err());
    }
}

/// Identifiers print as quoted strings in messages (`"hello"`), the way a
/// user typed them, not as `FunctionName("hello")`.
macro_rules! debug_as_str {
    ($($t:ident),*) => {$(
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self.0.as_str(), f)
            }
        }
    )*};
}
debug_as_str!(
    Namespace,
    FunctionName,
    TriggerName,
    TopicName,
    Digest,
    ActivationId,
    DeliveryId
);
