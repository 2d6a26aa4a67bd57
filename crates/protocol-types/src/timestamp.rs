//! [`Timestamp`]: Protocol's integer Unix seconds.

use std::fmt;

/// A point in time as Protocol sends it: whole seconds since the Unix epoch (UTC).
///
/// Timestamps are compared as integers; Protocol's resolution is one second, so two
/// changes within the same second carry equal timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The number of seconds since the Unix epoch.
    #[must_use]
    pub fn as_secs(self) -> i64 {
        self.0
    }
}

impl From<i64> for Timestamp {
    fn from(secs: i64) -> Self {
        Timestamp(secs)
    }
}

impl From<Timestamp> for i64 {
    fn from(ts: Timestamp) -> Self {
        ts.0
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i64(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        i64::deserialize(deserializer).map(Timestamp)
    }
}
