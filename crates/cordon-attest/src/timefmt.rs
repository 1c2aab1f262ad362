//! Times in error messages: RFC 3339 UTC, via `der`'s calendar arithmetic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `2025-12-10T00:00:00Z`; times outside 1970..9999 are given as seconds since the epoch.
pub fn rfc3339(t: SystemTime) -> String {
    match der::DateTime::from_system_time(t) {
        Ok(d) => d.to_string(),
        Err(_) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => format!("{} s after the Unix epoch", d.as_secs()),
            Err(e) => format!("{} s before the Unix epoch", e.duration().as_secs()),
        },
    }
}

/// [`rfc3339`] for Unix seconds.
pub fn rfc3339_secs(secs: u64) -> String {
    rfc3339(UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc() {
        assert_eq!(rfc3339_secs(1_764_000_000), "2025-11-24T16:00:00Z");
        assert_eq!(rfc3339_secs(0), "1970-01-01T00:00:00Z");
    }
}
