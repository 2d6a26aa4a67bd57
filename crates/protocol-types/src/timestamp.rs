//! [`Timestamp`]: Protocol's integer Unix seconds.

use std::fmt;
use std::time::{Duration, SystemTime};

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

    /// This moment as a [`SystemTime`]; `None` beyond what the platform's clock type
    /// holds.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use protocol_types::Timestamp;
    ///
    /// let t = Timestamp(692233200).to_system_time().unwrap();
    /// assert_eq!(t, SystemTime::UNIX_EPOCH + Duration::from_secs(692233200));
    /// assert_eq!(Timestamp::from_system_time(t), Some(Timestamp(692233200)));
    /// ```
    #[must_use]
    pub fn to_system_time(self) -> Option<SystemTime> {
        let offset = Duration::from_secs(self.0.unsigned_abs());
        if self.0 >= 0 {
            SystemTime::UNIX_EPOCH.checked_add(offset)
        } else {
            SystemTime::UNIX_EPOCH.checked_sub(offset)
        }
    }

    /// The whole second `time` falls in (rounded down, also before the epoch); `None`
    /// beyond 64-bit seconds.
    #[must_use]
    pub fn from_system_time(time: SystemTime) -> Option<Timestamp> {
        match time.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_secs()).ok().map(Timestamp),
            Err(before) => {
                let before = before.duration();
                let secs = before
                    .as_secs()
                    .checked_add(u64::from(before.subsec_nanos() > 0))?;
                0i64.checked_sub_unsigned(secs).map(Timestamp)
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_time_round_trips_and_rounds_down() {
        for secs in [0, 1, -1, 692_233_200, -692_233_200] {
            let time = Timestamp(secs).to_system_time().unwrap();
            assert_eq!(Timestamp::from_system_time(time), Some(Timestamp(secs)));
        }
        let epoch = SystemTime::UNIX_EPOCH;
        let half = Duration::from_millis(500);
        assert_eq!(
            Timestamp::from_system_time(epoch + half),
            Some(Timestamp(0))
        );
        assert_eq!(
            Timestamp::from_system_time(epoch - half),
            Some(Timestamp(-1))
        );
        // The extremes never panic (i64::MIN has no positive counterpart).
        for secs in [i64::MIN, i64::MAX] {
            if let Some(time) = Timestamp(secs).to_system_time() {
                assert_eq!(Timestamp::from_system_time(time), Some(Timestamp(secs)));
            }
        }
    }
}
