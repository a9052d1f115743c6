//! Calendar time for the names and messages hone writes (`2026-11-30 00:53:20 UTC`, run ids),
//! without a time-zone database: UTC only.

/// A unix time's UTC date and time of day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: i64,
    pub day: i64,
    pub hour: u64,
    pub minute: u64,
    pub second: u64,
}

/// The UTC date and time of unix time `t` (seconds).
pub fn civil(t: u64) -> Civil {
    let (days, secs) = ((t / 86_400) as i64, t % 86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    Civil {
        year: yoe + era * 400 + i64::from(month <= 2),
        month,
        day,
        hour: secs / 3600,
        minute: secs / 60 % 60,
        second: secs % 60,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_by_hand() {
        let c = |y, mo, d, h, mi, s| Civil {
            year: y,
            month: mo,
            day: d,
            hour: h,
            minute: mi,
            second: s,
        };
        assert_eq!(civil(0), c(1970, 1, 1, 0, 0, 0));
        assert_eq!(civil(1_796_000_000), c(2026, 11, 30, 0, 53, 20));
        assert_eq!(civil(951_782_400), c(2000, 2, 29, 0, 0, 0), "a leap day");
    }
}
