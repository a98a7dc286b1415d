//! Durations and sizes as configs and args write them: one parser for each, shared by the
//! config keys, the event sinks' args and the probes' args.
//!
//! Durations come in two syntaxes, both documented in `docs/configuration.md`: the core keys
//! and sink args take whole numbers with `ms`, `s`, `m` or `h` ([`WHOLE`]: `500ms`, `10s`);
//! the eBPF `threshold` arg also takes fractions and `ns`, `us`/`µs` ([`FRACTIONAL`]: `1.5s`,
//! `250us`). Neither takes a bare number (`10` has no unit) nor a compound such as `1h30m`.
//! Sizes are bytes or `K`, `M`, `G` in powers of 1024 (`KB`, `Ki`, `KiB` alike).
//!
//! Arithmetic is exact (integers, no floating point), so `1.001us` is 1001 ns.

use std::time::Duration;

/// One duration syntax: its units, and whether a number may have a fraction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationSyntax {
    /// `(suffix, nanoseconds)`, listed in error messages in this order.
    pub units: &'static [(&'static str, u64)],
    /// `1.5s` is a number.
    pub fractions: bool,
    /// `1 ms` (blanks between the number and its unit) is accepted.
    pub blank_before_unit: bool,
    /// Durations of this many nanoseconds or more are refused ([`UnitError::OutOfRange`]);
    /// `None`: larger ones saturate at `u64::MAX` seconds.
    pub limit_ns: Option<u64>,
}

const NS: u64 = 1;
const US: u64 = 1_000;
const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;
const M: u64 = 60 * S;
const H: u64 = 60 * M;

/// The config keys and sink args: `500ms`, `10s`, `2m`, `1h`; whole numbers only.
pub const WHOLE: DurationSyntax = DurationSyntax {
    units: &[("ms", MS), ("s", S), ("m", M), ("h", H)],
    fractions: false,
    blank_before_unit: false,
    limit_ns: None,
};

/// The eBPF probes' `threshold`: `250us`, `1.5s`, `100 ms`; nanoseconds that fit in a `u64`
/// (below 1.8e19).
pub const FRACTIONAL: DurationSyntax = DurationSyntax {
    units: &[
        ("ns", NS),
        ("us", US),
        ("µs", US),
        ("ms", MS),
        ("s", S),
        ("m", M),
    ],
    fractions: true,
    blank_before_unit: true,
    limit_ns: Some(18_000_000_000_000_000_000),
};

/// What is being parsed (it words the errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantity {
    Duration,
    Size,
}

/// Why a duration or size was refused; `Display` is the message for users (the caller puts the
/// key in front).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitError {
    /// No number where it should start (`fast`, an empty string).
    NotANumber { input: String, quantity: Quantity },
    /// A number without a unit of the syntax (`10`, `10x`); `known` lists them.
    BadUnit {
        input: String,
        quantity: Quantity,
        known: String,
    },
    /// Too large for what it sets, or a zero size.
    OutOfRange { input: String, quantity: Quantity },
}

impl std::fmt::Display for UnitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use Quantity::{Duration, Size};
        match self {
            UnitError::NotANumber {
                input,
                quantity: Duration,
            } => write!(f, "`{input}` is not a duration (like 500ms, 10s, 2m)"),
            UnitError::BadUnit {
                input,
                quantity: Duration,
                known,
            } => write!(f, "`{input}` has no valid unit ({known})"),
            UnitError::OutOfRange {
                input,
                quantity: Duration,
            } => write!(f, "`{input}` is too long"),
            UnitError::BadUnit {
                input,
                quantity: Size,
                ..
            } => write!(f, "invalid size unit in `{input}` (use K, M or G)"),
            UnitError::NotANumber {
                input,
                quantity: Size,
            }
            | UnitError::OutOfRange {
                input,
                quantity: Size,
            } => write!(f, "invalid size `{input}`"),
        }
    }
}

impl std::error::Error for UnitError {}

/// A decimal number at the start of `s`: (integer part, fraction digits as an integer and their
/// count, bytes taken). Digits beyond what a `u128` holds saturate; fraction digits beyond the
/// 24th (far below a nanosecond of any unit) are ignored.
fn leading_number(s: &str, fractions: bool) -> Option<(u128, u128, u32, usize)> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut int: u128 = 0;
    let mut digits = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        int = int
            .saturating_mul(10)
            .saturating_add(u128::from(b[i] - b'0'));
        i += 1;
        digits += 1;
    }
    let (mut frac, mut frac_len) = (0u128, 0u32);
    if fractions && i < b.len() && b[i] == b'.' {
        i += 1;
        while i < b.len() && b[i].is_ascii_digit() {
            if frac_len < 24 {
                frac = frac * 10 + u128::from(b[i] - b'0');
                frac_len += 1;
            }
            i += 1;
            digits += 1;
        }
    }
    (digits > 0).then_some((int, frac, frac_len, i))
}

/// A duration in `syntax`, e.g. [`WHOLE`] (`10s`) or [`FRACTIONAL`] (`1.5ms`). The input is
/// trimmed first; errors quote it trimmed.
pub fn parse_duration(s: &str, syntax: &DurationSyntax) -> Result<Duration, UnitError> {
    let input = s.trim();
    let not_a_number = || UnitError::NotANumber {
        input: input.to_string(),
        quantity: Quantity::Duration,
    };
    let (int, frac, frac_len, used) =
        leading_number(input, syntax.fractions).ok_or_else(not_a_number)?;
    if !syntax.fractions && int > u128::from(u64::MAX) {
        return Err(not_a_number());
    }
    let mut unit = &input[used..];
    if syntax.blank_before_unit {
        unit = unit.trim_start();
    }
    let Some(&(_, per)) = syntax.units.iter().find(|(u, _)| *u == unit) else {
        return Err(UnitError::BadUnit {
            input: input.to_string(),
            quantity: Quantity::Duration,
            known: syntax
                .units
                .iter()
                .map(|(u, _)| *u)
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    let per = u128::from(per);
    let ns = int
        .saturating_mul(per)
        .saturating_add(frac * per / 10u128.pow(frac_len));
    if let Some(limit) = syntax.limit_ns {
        if ns >= u128::from(limit) {
            return Err(UnitError::OutOfRange {
                input: input.to_string(),
                quantity: Quantity::Duration,
            });
        }
    }
    let secs = ns / u128::from(S);
    Ok(match u64::try_from(secs) {
        Ok(secs) => Duration::new(secs, (ns % u128::from(S)) as u32),
        Err(_) => Duration::from_secs(u64::MAX),
    })
}

/// A size in bytes: `10485760`, `512K`, `10M`, `10MB`, `1Gi`... (powers of 1024, the unit in
/// any case, blanks allowed before it). Zero is refused.
pub fn parse_size(s: &str) -> Result<u64, UnitError> {
    let t = s.trim();
    let invalid = || UnitError::NotANumber {
        input: s.to_string(),
        quantity: Quantity::Size,
    };
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(digits);
    let n: u64 = n.parse().map_err(|_| invalid())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "ki" | "kib" => 1 << 10,
        "m" | "mb" | "mi" | "mib" => 1 << 20,
        "g" | "gb" | "gi" | "gib" => 1 << 30,
        _ => {
            return Err(UnitError::BadUnit {
                input: s.to_string(),
                quantity: Quantity::Size,
                known: "K, M, G".to_string(),
            })
        }
    };
    n.checked_mul(mult)
        .filter(|v| *v > 0)
        .ok_or_else(|| UnitError::OutOfRange {
            input: s.to_string(),
            quantity: Quantity::Size,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(s: &str) -> Result<Duration, UnitError> {
        parse_duration(s, &WHOLE)
    }

    fn ns(s: &str) -> Option<u64> {
        parse_duration(s, &FRACTIONAL)
            .ok()
            .map(|d| d.as_nanos() as u64)
    }

    /// What `config::parse_duration` accepted: whole numbers with ms, s, m, h; saturating.
    #[test]
    fn whole_durations() {
        assert_eq!(whole("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(whole(" 10s ").unwrap(), Duration::from_secs(10));
        assert_eq!(whole("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(whole("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(whole("0s").unwrap(), Duration::ZERO);
        assert_eq!(whole("1234ms").unwrap(), Duration::from_millis(1234));
        assert_eq!(
            whole("18446744073709551615h").unwrap(),
            Duration::from_secs(u64::MAX)
        );
        assert_eq!(
            whole("18446744073709551615ms").unwrap(),
            Duration::from_millis(u64::MAX)
        );
        for (bad, not_a_number) in [
            ("", true),
            ("fast", true),
            ("-1s", true),
            ("+1s", true),
            ("18446744073709551616s", true),
            ("10", false),
            ("10x", false),
            ("1.5s", false),
            ("10 s", false),
            ("250us", false),
            ("1h30m", false),
            ("1d", false),
        ] {
            let e = whole(bad).unwrap_err();
            assert_eq!(
                matches!(e, UnitError::NotANumber { .. }),
                not_a_number,
                "{bad}: {e:?}"
            );
        }
        assert_eq!(
            whole(" fast ").unwrap_err().to_string(),
            "`fast` is not a duration (like 500ms, 10s, 2m)"
        );
        assert_eq!(
            whole("10").unwrap_err().to_string(),
            "`10` has no valid unit (ms, s, m, h)"
        );
    }

    /// What `probes::parse_duration_ns` accepted: fractions, ns to m, a blank before the unit.
    #[test]
    fn fractional_durations() {
        assert_eq!(ns("100ms"), Some(100_000_000));
        assert_eq!(ns("1.5s"), Some(1_500_000_000));
        assert_eq!(ns("250us"), Some(250_000));
        assert_eq!(ns("250µs"), Some(250_000));
        assert_eq!(ns("2m"), Some(120_000_000_000));
        assert_eq!(ns("7ns"), Some(7));
        assert_eq!(ns("100 ms"), Some(100_000_000));
        assert_eq!(ns(".5s"), Some(500_000_000));
        assert_eq!(ns("1.ms"), Some(1_000_000));
        assert_eq!(ns("0ms"), Some(0));
        assert_eq!(
            ns("17999999999.999999999s"),
            Some(17_999_999_999_999_999_999)
        );
        for bad in [
            "100",
            "fast",
            "",
            ".",
            ".s",
            "1..2s",
            "1.2.3s",
            "1e3ms",
            "1h",
            "-1ms",
            "1.5",
            "18e9s",
            "18000000000s",
        ] {
            assert_eq!(ns(bad), None, "{bad}");
        }
        assert!(matches!(
            parse_duration("18000000000s", &FRACTIONAL),
            Err(UnitError::OutOfRange { .. })
        ));
        assert_eq!(
            parse_duration("5x", &FRACTIONAL).unwrap_err().to_string(),
            "`5x` has no valid unit (ns, us, µs, ms, s, m)"
        );
    }

    /// Regression: `probes::parse_duration_ns` multiplied an `f64` and truncated, so `1.001us`
    /// was 1000 ns and `2.01s` 2 009 999 999 ns; fractions are now computed in integers.
    #[test]
    fn fractional_threshold_loses_no_nanosecond() {
        assert_eq!(ns("1.001us"), Some(1_001));
        assert_eq!(ns("1.003ms"), Some(1_003_000));
        assert_eq!(ns("2.01s"), Some(2_010_000_000));
        assert_eq!(ns("1.0000000009s"), Some(1_000_000_000));
    }

    /// What `events::file::parse_size` accepted: bytes, K/M/G in any spelling, never zero.
    #[test]
    fn sizes() {
        assert_eq!(parse_size("10").unwrap(), 10);
        assert_eq!(parse_size("10b").unwrap(), 10);
        assert_eq!(parse_size("512K").unwrap(), 512 * 1024);
        assert_eq!(parse_size("512 kib").unwrap(), 512 * 1024);
        assert_eq!(parse_size("10MB").unwrap(), 10 << 20);
        assert_eq!(parse_size("10Mi").unwrap(), 10 << 20);
        assert_eq!(parse_size(" 1Gi ").unwrap(), 1 << 30);
        assert_eq!(parse_size("3gb").unwrap(), 3 << 30);
        for bad in ["0", "0K", "10X", "", "K", "1.5M", "-1", "17179869184G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_size("10X").unwrap_err().to_string(),
            "invalid size unit in `10X` (use K, M or G)"
        );
        assert_eq!(parse_size("0").unwrap_err().to_string(), "invalid size `0`");
        assert_eq!(
            parse_size(" x").unwrap_err().to_string(),
            "invalid size ` x`"
        );
    }
}
