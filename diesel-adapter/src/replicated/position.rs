//! [`WalPosition`]: a point in the primary's write-ahead log, the unit of read-your-writes.

use std::fmt;
use std::str::FromStr;

/// A position in PostgreSQL's write-ahead log (an LSN, `pg_lsn`), as PostgreSQL prints it:
/// two hexadecimal halves, `16/B374D848`.
///
/// A [`ClusterConnection`](super::ClusterConnection) keeps the position of its last commit on
/// the primary; a replica may serve its reads once it has replayed that far. The text form
/// round-trips, so a position can travel to the next request in a cookie or a header:
///
/// ```
/// use litemux_diesel::replicated::WalPosition;
/// let position: WalPosition = "16/B374D848".parse()?;
/// assert_eq!(position.to_string(), "16/B374D848");
/// assert!(position > "16/B374D847".parse()?);
/// # Ok::<_, litemux_diesel::replicated::ParsePositionError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct WalPosition(u64);

impl WalPosition {
    /// The position as one number (bytes since the start of the log).
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// A position from its number.
    pub fn from_u64(value: u64) -> Self {
        WalPosition(value)
    }

    /// Bytes from `earlier` to `self`; zero when `earlier` is not earlier.
    pub fn bytes_after(self, earlier: WalPosition) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for WalPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// Text that is not a WAL position (`HIGH/LOW`, each half 1 to 8 hexadecimal digits).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a WAL position (expected two hexadecimal halves, like `16/B374D848`)")]
pub struct ParsePositionError {
    text: String,
}

impl FromStr for WalPosition {
    type Err = ParsePositionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || ParsePositionError {
            text: text.to_owned(),
        };
        let (high, low) = text.split_once('/').ok_or_else(invalid)?;
        let half = |s: &str| {
            let digits_only =
                !s.is_empty() && s.len() <= 8 && s.bytes().all(|b| b.is_ascii_hexdigit());
            digits_only
                .then(|| u32::from_str_radix(s, 16).ok())
                .flatten()
        };
        match (half(high), half(low)) {
            (Some(high), Some(low)) => Ok(WalPosition((u64::from(high) << 32) | u64::from(low))),
            _ => Err(invalid()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_and_orders_numerically() -> Result<(), ParsePositionError> {
        for text in ["0/0", "0/1", "16/B374D848", "FFFFFFFF/FFFFFFFF"] {
            assert_eq!(text.parse::<WalPosition>()?.to_string(), text);
        }
        // Text order is not position order: "9/..." < "10/..." only numerically.
        assert!("9/FFFFFFFF".parse::<WalPosition>()? < "10/0".parse::<WalPosition>()?);
        assert_eq!("1/0".parse::<WalPosition>()?.as_u64(), 1 << 32);
        assert_eq!(
            "0/10".parse::<WalPosition>()?.bytes_after("0/4".parse()?),
            12
        );
        assert_eq!(
            "0/4".parse::<WalPosition>()?.bytes_after("0/10".parse()?),
            0
        );
        Ok(())
    }

    #[test]
    fn malformed_text_is_an_error() {
        for text in [
            "",
            "/",
            "1/",
            "/1",
            "1",
            "1/2/3",
            "G/0",
            "0/-1",
            "123456789/0",
            " 1/0",
            "+1/0",
        ] {
            let error = text.parse::<WalPosition>().expect_err(text);
            assert!(
                error.to_string().contains("is not a WAL position"),
                "{error}"
            );
        }
    }
}
