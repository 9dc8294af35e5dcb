//! Dates in the form qmail writes them: `D Mon YYYY HH:MM:SS -0000`, always UTC.

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01 (proleptic Gregorian).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `22 Nov 2026 01:42:05 -0000` (qmail's Received/Date format).
pub fn rfc822(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let s = unix % 86_400;
    let (y, m, d) = civil(days);
    format!(
        "{d} {} {y} {:02}:{:02}:{:02} -0000",
        MONTHS[m as usize - 1],
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// `Sun Nov 22 01:42:05 2026` (ctime, for mbox From_ lines).
pub fn ctime(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let s = unix % 86_400;
    let (y, m, d) = civil(days);
    format!(
        "{} {} {d:2} {:02}:{:02}:{:02} {y}",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[m as usize - 1],
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(rfc822(0), "1 Jan 1970 00:00:00 -0000");
        assert_eq!(rfc822(951_782_400), "29 Feb 2000 00:00:00 -0000");
        assert_eq!(rfc822(1_795_311_725), "22 Nov 2026 01:42:05 -0000");
        assert_eq!(ctime(1_795_311_725), "Sun Nov 22 01:42:05 2026");
        assert_eq!(ctime(0), "Thu Jan  1 00:00:00 1970");
    }
}
