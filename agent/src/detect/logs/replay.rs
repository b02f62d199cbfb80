//! Reading a whole log after the fact, as `check` and `report --log` do: lines bounded like the
//! daemon's inputs, and the year a line does not write guessed from the lines around it.
use std::io::{self, BufRead};

use crate::detect::logs::{input::MAX_LINE_BYTES, prefix::LogTime};

/// Lines of a `BufRead`, each at most [`MAX_LINE_BYTES`]: a line within the reader's buffer
/// is lent from it (no copy), one across its end or longer is gathered (and cut).
#[derive(Default)]
pub struct LineReader {
    line: Vec<u8>,
    /// What the lent line took of the reader's buffer, consumed on the next call.
    lent: usize,
}

impl LineReader {
    /// The next line with its newline, and whether it was cut; `None` at the end.
    ///
    /// # Errors
    /// When reading fails.
    pub fn next<'a, R: BufRead>(
        &'a mut self,
        input: &'a mut R,
    ) -> io::Result<Option<(&'a [u8], bool)>> {
        input.consume(std::mem::take(&mut self.lent));
        let whole = {
            let available = input.fill_buf()?;
            if available.is_empty() {
                return Ok(None);
            }
            memchr::memchr(b'\n', available).filter(|&end| end <= MAX_LINE_BYTES)
        };
        if let Some(end) = whole {
            self.lent = end + 1;
            // The same buffer again: no read.
            return Ok(Some((&input.fill_buf()?[..=end], false)));
        }
        self.line.clear();
        let _: usize = io::Read::take(&mut *input, MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut self.line)?;
        let truncated = self.line.len() > MAX_LINE_BYTES && self.line.last() != Some(&b'\n');
        if truncated {
            self.line.truncate(MAX_LINE_BYTES);
            // Skip the rest of the line.
            let mut sink = Vec::new();
            let _: usize = input.read_until(b'\n', &mut sink)?;
        }
        Ok(Some((&self.line, truncated)))
    }
}

/// The year of a line that writes none: this year, or the last one for a date still to come
/// (more than a day ahead of `now`), moving on when the months wrap (December, then January).
pub struct YearGuess {
    this_year: i32,
    now_unix: i64,
    /// The year of the last line without one, and its month.
    last: Option<(i32, u8)>,
}

impl YearGuess {
    pub fn new(now_unix: u64) -> Self {
        let now_unix = i64::try_from(now_unix).unwrap_or(i64::MAX);
        Self {
            this_year: LogTime::from_unix_seconds(now_unix).year.unwrap_or(1970),
            now_unix,
            last: None,
        }
    }

    /// `time`'s year: its own, or the guess.
    pub fn year_of(&mut self, time: &LogTime) -> i32 {
        let year = time.year.unwrap_or_else(|| match self.last {
            Some((year, month)) if time.month + 6 < month => year + 1,
            Some((year, _)) => year,
            None if time.unix(self.this_year) > self.now_unix + 86_400 => self.this_year - 1,
            None => self.this_year,
        });
        if time.year.is_none() {
            self.last = Some((year, time.month));
        }
        year
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yearless(month: u8) -> LogTime {
        LogTime {
            year: None,
            month,
            day: 15,
            hour: 0,
            minute: 0,
            second: 0,
            nanos: 0,
            offset: None,
        }
    }

    #[test]
    fn a_missing_year_is_this_one_the_last_for_a_future_date_and_moves_on_at_new_year() {
        // 2026-06-15.
        let now = 1_781_481_600;
        let mut guess = YearGuess::new(now);
        assert_eq!(guess.year_of(&yearless(3)), 2026);
        assert_eq!(guess.year_of(&yearless(12)), 2026);
        assert_eq!(guess.year_of(&yearless(1)), 2027, "the months wrapped");
        let mut guess = YearGuess::new(now);
        assert_eq!(
            guess.year_of(&yearless(11)),
            2025,
            "still to come this year"
        );
        let dated = LogTime {
            year: Some(2019),
            ..yearless(5)
        };
        assert_eq!(guess.year_of(&dated), 2019);
    }

    #[test]
    fn long_lines_are_cut_and_their_rest_skipped() {
        let long = "x".repeat(MAX_LINE_BYTES + 10);
        let text = format!("short\n{long}\nafter\nend");
        let mut input = io::BufReader::with_capacity(64, text.as_bytes());
        let mut reader = LineReader::default();
        let mut lines = Vec::new();
        while let Some((line, cut)) = reader.next(&mut input).unwrap() {
            lines.push((line.len(), cut));
        }
        assert_eq!(
            lines,
            [(6, false), (MAX_LINE_BYTES, true), (6, false), (3, false)]
        );
    }
}
