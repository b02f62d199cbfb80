//! What loggers put before a daemon's message, parsed once for every ruleset: the time, the
//! host, the program and its pid. A ruleset that names its programs (`programs = ["sshd"]`)
//! then matches only the message, whatever wrote the line: RFC 3164 syslog with or without
//! a host name (and a `<PRI>`), RFC 5424, RFC 3339 / ISO 8601 times with fractions and zones,
//! `journalctl -o short`, `short-iso`, `short-precise`, `short-full`, TAI64N labels
//! (daemontools, s6), Solaris's `[ID n facility.level]`, an optional `[pid]`.
//!
//! Nothing here is a regex: a line is walked once, left to right, and anything that does not
//! fit a shape leaves the line unparsed (no program), never half-parsed.

/// A time as a log line writes it. The year is missing in RFC 3164 and `-o short`; the zone
/// is missing in most formats (the writer's local time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogTime {
    pub year: Option<i32>,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    pub nanos: u32,
    /// Seconds east of UTC, when the line says.
    pub offset: Option<i32>,
}

/// A line split into its prefix and its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefixed<'a> {
    pub time: Option<LogTime>,
    pub host: Option<&'a str>,
    /// The tag's program (`sshd`, `postfix/smtpd`); `None` when the line has no syslog shape.
    pub program: Option<&'a str>,
    pub pid: Option<&'a str>,
    /// After the tag (and a Solaris `[ID ...]`); the whole rest of the line without a tag.
    pub message: &'a str,
    /// From the tag on (`sshd[42]: msg`): the message with its tag; the message when there is
    /// no tag.
    pub tagged: &'a str,
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
/// TAI64 labels count from 2^62; daemontools' `tai64n` writes Unix time + 10 on it.
const TAI64_UNIX: u64 = (1 << 62) + 10;

/// A bounds-checked cursor over the line's bytes.
struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    const fn new(text: &'a str) -> Self {
        Self { text, at: 0 }
    }

    fn rest(&self) -> &'a str {
        self.text.get(self.at..).unwrap_or("")
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn eat_str(&mut self, literal: &str) -> bool {
        if self.rest().starts_with(literal) {
            self.at += literal.len();
            true
        } else {
            false
        }
    }

    /// Exactly `n` ASCII digits.
    fn digits(&mut self, n: usize) -> Option<u32> {
        let bytes = self.rest().as_bytes().get(..n)?;
        if !bytes.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.at += n;
        Some(bytes.iter().fold(0, |v, d| v * 10 + u32::from(d - b'0')))
    }

    /// One or more digits, at most `max`: their value and how many.
    fn some_digits(&mut self, max: usize) -> Option<(u64, usize)> {
        let count = self
            .rest()
            .bytes()
            .take(max)
            .take_while(u8::is_ascii_digit)
            .count();
        if count == 0 {
            return None;
        }
        let value = self.rest().as_bytes()[..count]
            .iter()
            .fold(0_u64, |v, d| v * 10 + u64::from(d - b'0'));
        self.at += count;
        Some((value, count))
    }

    /// Up to the next space (not eaten), at least one byte.
    fn word(&mut self) -> Option<&'a str> {
        let rest = self.rest();
        let end = space(rest);
        if end == 0 {
            return None;
        }
        self.at += end;
        Some(&rest[..end])
    }

    /// Try `parse` on a copy; keep its position only when it succeeds.
    fn attempt<T>(&mut self, parse: impl FnOnce(&mut Self) -> Option<T>) -> Option<T> {
        let mut trial = Cursor {
            text: self.text,
            at: self.at,
        };
        let value = parse(&mut trial)?;
        self.at = trial.at;
        Some(value)
    }
}

impl LogTime {
    /// A time from its fields, the clock as [`clock`] reads it.
    const fn civil(
        year: Option<i32>,
        month: u8,
        day: u8,
        (hour, minute, second, nanos): (u8, u8, u8, u32),
        offset: Option<i32>,
    ) -> Self {
        Self {
            year,
            month,
            day,
            hour,
            minute,
            second,
            nanos,
            offset,
        }
    }

    /// The time in seconds since the Unix epoch: a missing year is `year`, a missing zone UTC
    /// (only differences between lines matter for a sliding window).
    pub fn unix(&self, year: i32) -> i64 {
        let days = days_from_civil(self.year.unwrap_or(year), self.month, self.day);
        days * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
            - i64::from(self.offset.unwrap_or(0))
    }

    /// `YYYY-MM-DDTHH:MM:SS` (the year `year` when missing), as written: no zone applied.
    pub fn civil_text(&self, year: i32) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            self.year.unwrap_or(year),
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second
        )
    }

    /// The UTC time of `unix` seconds.
    pub fn from_unix_seconds(unix: i64) -> Self {
        Self::from_unix(unix, 0)
    }

    fn from_unix(unix: i64, nanos: u32) -> Self {
        let days = unix.div_euclid(86_400);
        let secs = unix.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        Self {
            year: Some(year),
            month,
            day,
            hour: u8::try_from(secs / 3600).unwrap_or(0),
            minute: u8::try_from(secs / 60 % 60).unwrap_or(0),
            second: u8::try_from(secs % 60).unwrap_or(0),
            nanos,
            offset: Some(0),
        }
    }

    /// The time a line carries, for lines without a syslog shape too: at its start (any
    /// format [`parse`] knows, bare or in brackets; nginx's and rsync's `YYYY/MM/DD
    /// HH:MM:SS`; Apache's and vsftpd's `Www Mmm DD HH:MM:SS[.ffffff] YYYY`; xrdp's
    /// `[YYYYMMDD-HH:MM:SS]`; a JSON log's `{"t":{"$date":"..."}`), or the first
    /// `[DD/Mmm/YYYY:HH:MM:SS ±ZZZZ]` of an access log.
    pub fn find(line: &str) -> Option<Self> {
        parse(line).time.or_else(|| Self::find_unprefixed(line))
    }

    /// [`LogTime::find`] for a line [`parse`] found no time in already.
    pub fn find_unprefixed(line: &str) -> Option<Self> {
        let mut cursor = Cursor::new(line);
        // Every form at the start begins with a digit or a letter (a month, a weekday): a
        // line that starts otherwise (an access log's client address does too, but fails at
        // its first separator) is not tried against each.
        let at_start = |c: &mut Cursor<'_>| {
            if !could_start_a_time(c.rest().as_bytes()) {
                return None;
            }
            c.attempt(slashed_date_time)
                .or_else(|| c.attempt(weekday_date_year))
                .or_else(|| c.attempt(line_time))
                .or_else(|| c.attempt(compact_date_time))
                .or_else(|| c.attempt(dashed_date_time))
        };
        if let Some(time) = cursor.attempt(at_start) {
            return Some(time);
        }
        if line.starts_with('[')
            && let Some(time) = cursor.attempt(|c| {
                c.eat(b'[').then_some(())?;
                let time = at_start(c)?;
                c.eat(b']').then_some(time)
            })
        {
            return Some(time);
        }
        // MongoDB (4.4+) and other JSON logs: the `$date` of the leading `"t"`.
        if let Some(rest) = line.strip_prefix("{\"t\":{\"$date\":\"") {
            let mut cursor = Cursor::new(rest);
            if let Some(time) = iso_time(&mut cursor) {
                return Some(time);
            }
        }
        // An access log's time follows the client, ident and user fields, which are short: the
        // first " [" (a byte search for the bracket, not a substring searcher per line).
        let mut cut = line.len().min(512);
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        let head = &line[..cut];
        let open = head
            .bytes()
            .enumerate()
            .skip(1)
            .find(|&(at, b)| b == b'[' && head.as_bytes()[at - 1] == b' ')?
            .0;
        let mut cursor = Cursor::new(&line[open + 1..]);
        common_log_time(&mut cursor)
    }
}

/// Whether a time this module reads could start `text`: a month or weekday's capital, four
/// digits (a year), or two and a dash (`22-Nov-2026`). An access log's client address
/// (`198.51.100.7 `, `2001:db8::1 `) is turned away at once instead of by each form.
fn could_start_a_time(text: &[u8]) -> bool {
    match text.first() {
        Some(b'J' | b'F' | b'M' | b'A' | b'S' | b'O' | b'N' | b'D' | b'T' | b'W') => true,
        Some(b'0'..=b'9') => {
            let digits = text
                .iter()
                .take(4)
                .take_while(|b| b.is_ascii_digit())
                .count();
            digits == 4 || (digits == 2 && text.get(2) == Some(&b'-'))
        }
        _ => false,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i32, month: u8, day: u8) -> i64 {
    let year = i64::from(year) - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (
        i32::try_from(year).unwrap_or(1970),
        u8::try_from(month).unwrap_or(1),
        u8::try_from(day).unwrap_or(1),
    )
}

fn month(cursor: &mut Cursor<'_>) -> Option<u8> {
    let name = cursor.rest().as_bytes().get(..3)?;
    // Most lines that reach here start otherwise: one byte tells.
    if !b"JFMASOND".contains(&name[0]) {
        return None;
    }
    let index = MONTHS.iter().position(|m| m.as_bytes() == name)?;
    cursor.at += 3;
    u8::try_from(index + 1).ok()
}

/// `HH:MM:SS` and an optional fraction (`.` or `,`, 1 to 9 digits).
fn clock(cursor: &mut Cursor<'_>) -> Option<(u8, u8, u8, u32)> {
    let hour = cursor.digits(2)?;
    cursor.eat(b':').then_some(())?;
    let minute = cursor.digits(2)?;
    cursor.eat(b':').then_some(())?;
    let second = cursor.digits(2)?;
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let nanos = cursor
        .attempt(|c| {
            (c.eat(b'.') || c.eat(b',')).then_some(())?;
            let (value, count) = c.some_digits(9)?;
            let scale = 10_u64.pow(u32::try_from(9 - count).ok()?);
            u32::try_from(value * scale).ok()
        })
        .unwrap_or(0);
    // Seconds 60 (a leap second) count as 59: one second off is nothing to a window.
    Some((
        u8::try_from(hour).ok()?,
        u8::try_from(minute).ok()?,
        u8::try_from(second.min(59)).ok()?,
        nanos,
    ))
}

fn valid_day(day: u32) -> Option<u8> {
    (1..=31).contains(&day).then(|| u8::try_from(day).ok())?
}

/// `Mmm DD HH:MM:SS[.f]`, the day space- or zero-padded, then an optional ` YYYY` (some
/// syslog daemons add it) when a space follows it.
fn rfc3164_time(cursor: &mut Cursor<'_>) -> Option<LogTime> {
    let month = month(cursor)?;
    cursor.eat(b' ').then_some(())?;
    let day = if cursor.eat(b' ') {
        cursor.digits(1)?
    } else {
        cursor
            .some_digits(2)
            .map(|(v, _)| u32::try_from(v).unwrap_or(0))?
    };
    let day = valid_day(day)?;
    cursor.eat(b' ').then_some(())?;
    let (hour, minute, second, nanos) = clock(cursor)?;
    let year = cursor.attempt(|c| {
        c.eat(b' ').then_some(())?;
        let year = c.digits(4)?;
        (c.peek() == Some(b' ')).then(|| i32::try_from(year).ok())?
    });
    Some(LogTime::civil(
        year,
        month,
        day,
        (hour, minute, second, nanos),
        None,
    ))
}

/// `Z`, `±HH:MM`, `±HHMM` or `±HH`: seconds east of UTC.
fn zone(cursor: &mut Cursor<'_>) -> Option<i32> {
    if cursor.eat(b'Z') || cursor.eat(b'z') {
        return Some(0);
    }
    let sign = match cursor.peek()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    cursor.at += 1;
    let hours = cursor.digits(2)?;
    let minutes = if cursor.eat(b':') {
        cursor.digits(2)?
    } else {
        cursor.attempt(|c| c.digits(2)).unwrap_or(0)
    };
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some(sign * i32::try_from(hours * 3600 + minutes * 60).ok()?)
}

/// `YYYY-MM-DD` `T` or space `HH:MM:SS[.f][zone]`.
fn iso_time(cursor: &mut Cursor<'_>) -> Option<LogTime> {
    let year = cursor.digits(4)?;
    cursor.eat(b'-').then_some(())?;
    let month = cursor.digits(2)?;
    cursor.eat(b'-').then_some(())?;
    let day = valid_day(cursor.digits(2)?)?;
    (cursor.eat(b'T') || cursor.eat(b't') || cursor.eat(b' ')).then_some(())?;
    let (hour, minute, second, nanos) = clock(cursor)?;
    // The zone right after the time, or after one space (`... 01:04:49.008 +08:00`, as
    // .NET's Serilog writes it).
    let offset = cursor.attempt(zone).or_else(|| {
        cursor.attempt(|c| {
            c.eat(b' ').then_some(())?;
            matches!(c.peek(), Some(b'+' | b'-')).then_some(())?;
            zone(c)
        })
    });
    Some(LogTime::civil(
        Some(i32::try_from(year).ok()?),
        u8::try_from(month).ok().filter(|m| (1..=12).contains(m))?,
        day,
        (hour, minute, second, nanos),
        offset,
    ))
}

/// Roundcube's `DD-Mmm-YYYY HH:MM:SS ±ZZZZ`.
fn dashed_date_time(cursor: &mut Cursor<'_>) -> Option<LogTime> {
    let day = valid_day(cursor.digits(2)?)?;
    cursor.eat(b'-').then_some(())?;
    let month = month(cursor)?;
    cursor.eat(b'-').then_some(())?;
    let year = cursor.digits(4)?;
    cursor.eat(b' ').then_some(())?;
    let (hour, minute, second, nanos) = clock(cursor)?;
    let offset = cursor.attempt(|c| {
        c.eat(b' ').then_some(())?;
        zone(c)
    });
    Some(LogTime::civil(
        Some(i32::try_from(year).ok()?),
        month,
        day,
        (hour, minute, second, nanos),
        offset,
    ))
}

/// `journalctl -o short-full`: `Www YYYY-MM-DD HH:MM:SS ZONE` (the zone a name: UTC, CET).
fn short_full_time(cursor: &mut Cursor<'_>) -> Option<LogTime> {
    let weekday = cursor.rest().get(..3)?;
    (b"MTWFS".contains(&weekday.as_bytes()[0]) && WEEKDAYS.contains(&weekday)).then_some(())?;
    cursor.at += 3;
    cursor.eat(b' ').then_some(())?;
    let mut time = iso_time(cursor)?;
    cursor.eat(b' ').then_some(())?;
    let zone = cursor.word()?;
    if zone == "UTC" || zone == "GMT" {
        time.offset = Some(0);
    }
    Some(time)
}

/// `@` and 24 hex digits: TAI64N.
fn tai64n_time(cursor: &mut Cursor<'_>) -> Option<LogTime> {
    cursor.eat(b'@').then_some(())?;
    let hex = cursor.rest().get(..24)?;
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let seconds = u64::from_str_radix(&hex[..16], 16).ok()?;
    let nanos = u32::from_str_radix(&hex[16..], 16).ok()?;
    cursor.at += 24;
    let unix = i64::try_from(seconds.checked_sub(TAI64_UNIX)?).ok()?;
    Some(LogTime::from_unix(unix, nanos.min(999_999_999)))
}

/// nginx's error log: `YYYY/MM/DD HH:MM:SS`.
fn slashed_date_time(cursor: &mut Cursor<'_>) -> Option<LogTime> {
    let year = cursor.digits(4)?;
    cursor.eat(b'/').then_some(())?;
    let month = cursor.digits(2)?;
    cursor.eat(b'/').then_some(())?;
    let day = valid_day(cursor.digits(2)?)?;
    cursor.eat(b' ').then_some(())?;
    let (hour, minute, second, nanos) = clock(cursor)?;
    Some(LogTime::civil(
        Some(i32::try_from(year).ok()?),
        u8::try_from(month).ok().filter(|m| (1..=12).contains(m))?,
        day,
        (hour, minute, second, nanos),
        None,
    ))
}

/// xrdp's `YYYYMMDD-HH:MM:SS`.
fn compact_date_time(cursor: &mut Cursor<'_>) -> Option<LogTime> {
    let year = cursor.digits(4)?;
    let month = cursor.digits(2)?;
    let day = valid_day(cursor.digits(2)?)?;
    cursor.eat(b'-').then_some(())?;
    let (hour, minute, second, nanos) = clock(cursor)?;
    Some(LogTime::civil(
        Some(i32::try_from(year).ok()?),
        u8::try_from(month).ok().filter(|m| (1..=12).contains(m))?,
        day,
        (hour, minute, second, nanos),
        None,
    ))
}

/// Apache's error log: `Www Mmm DD HH:MM:SS[.ffffff] YYYY`.
fn weekday_date_year(cursor: &mut Cursor<'_>) -> Option<LogTime> {
    let weekday = cursor.rest().get(..3)?;
    (b"MTWFS".contains(&weekday.as_bytes()[0]) && WEEKDAYS.contains(&weekday)).then_some(())?;
    cursor.at += 3;
    cursor.eat(b' ').then_some(())?;
    let mut time = rfc3164_time(cursor)?;
    if time.year.is_none() {
        cursor.eat(b' ').then_some(())?;
        time.year = Some(i32::try_from(cursor.digits(4)?).ok()?);
    }
    Some(time)
}

/// The common log format's `DD/Mmm/YYYY:HH:MM:SS ±ZZZZ`.
fn common_log_time(cursor: &mut Cursor<'_>) -> Option<LogTime> {
    let day = valid_day(cursor.digits(2)?)?;
    cursor.eat(b'/').then_some(())?;
    let month = month(cursor)?;
    cursor.eat(b'/').then_some(())?;
    let year = cursor.digits(4)?;
    cursor.eat(b':').then_some(())?;
    let (hour, minute, second, nanos) = clock(cursor)?;
    let offset = cursor.attempt(|c| {
        c.eat(b' ').then_some(())?;
        zone(c)
    });
    Some(LogTime::civil(
        Some(i32::try_from(year).ok()?),
        month,
        day,
        (hour, minute, second, nanos),
        offset,
    ))
}

/// Any time a syslog-shaped line may start with.
fn line_time(cursor: &mut Cursor<'_>) -> Option<LogTime> {
    if !could_start_a_time(cursor.rest().as_bytes()) {
        return None;
    }
    cursor
        .attempt(rfc3164_time)
        .or_else(|| cursor.attempt(iso_time))
        .or_else(|| cursor.attempt(short_full_time))
}

/// A program name: no spaces, brackets or colons, and not empty.
fn is_program(name: &str) -> bool {
    !name.is_empty() && !name.contains([' ', '[', ']', ':']) && name.len() <= 128
}

/// A host name or address as syslog writes it.
fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'))
}

/// `program[pid]:` or `program:` (a space, or the end, after it): program, pid and where the
/// message starts.
/// Where the first space is (the length without one): a byte loop, as the words before it
/// are short and a substring searcher's setup would cost more than it saves.
fn space(text: &str) -> usize {
    text.bytes().position(|b| b == b' ').unwrap_or(text.len())
}

fn tag(text: &str) -> Option<(&str, Option<&str>, &str)> {
    // The tag is one word (no spaces in a program name or pid): only it is looked at, so a
    // line of another shape costs a word, not a search of the line.
    let word = &text[..space(text)];
    let head = word.strip_suffix(':')?;
    let end = head.len();
    let message = text.get(end + 2..).unwrap_or("");
    // `[program]:`, as some syslog daemons write a tag without a pid.
    if let Some(inner) = head.strip_prefix('[').and_then(|h| h.strip_suffix(']'))
        && is_program(inner)
    {
        return Some((inner, None, message));
    }
    match head.strip_suffix(']') {
        Some(with_pid) => {
            let open = with_pid.bytes().rposition(|b| b == b'[')?;
            let (program, pid) = (&with_pid[..open], &with_pid[open + 1..]);
            (is_program(program) && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
                .then_some((program, Some(pid), message))
        }
        None => is_program(head).then_some((head, None, message)),
    }
}

/// Solaris's message id: `[ID 800047 auth.info] `.
fn strip_solaris_id(message: &str) -> &str {
    let mut cursor = Cursor::new(message);
    cursor
        .attempt(|c| {
            c.eat_str("[ID ").then_some(())?;
            c.some_digits(20)?;
            c.eat(b' ').then_some(())?;
            let facility = c.word()?.strip_suffix(']')?;
            facility.contains('.').then_some(())?;
            c.eat(b' ');
            Some(())
        })
        .map_or(message, |()| cursor.rest())
}

/// `1 TIMESTAMP HOST APP PROCID MSGID STRUCTURED-DATA [MSG]`, `-` for what is missing.
fn parse_rfc5424(text: &str) -> Option<Prefixed<'_>> {
    let mut cursor = Cursor::new(text);
    cursor.eat_str("1 ").then_some(())?;
    let time = if cursor.eat(b'-') {
        None
    } else {
        Some(iso_time(&mut cursor)?)
    };
    fn field<'t>(cursor: &mut Cursor<'t>) -> Option<Option<&'t str>> {
        cursor.eat(b' ').then_some(())?;
        let word = cursor.word()?;
        Some((word != "-").then_some(word))
    }
    let host = field(&mut cursor)?;
    let program = field(&mut cursor)?.filter(|p| is_program(p))?;
    let pid = field(&mut cursor)?;
    let _message_id = field(&mut cursor)?;
    cursor.eat(b' ').then_some(())?;
    if !cursor.eat(b'-') {
        // One or more `[id param="value" ...]`; `\]` escapes a bracket inside a value.
        while cursor.peek() == Some(b'[') {
            let rest = cursor.rest().as_bytes();
            let mut at = 1;
            let mut quoted = false;
            loop {
                match rest.get(at)? {
                    b'\\' if quoted => at += 1,
                    b'"' => quoted = !quoted,
                    b']' if !quoted => break,
                    _ => {}
                }
                at += 1;
            }
            cursor.at += at + 1;
        }
    }
    let _ = cursor.eat(b' ');
    let message = cursor.rest();
    let message = message.strip_prefix('\u{feff}').unwrap_or(message);
    Some(Prefixed {
        time,
        host,
        program: Some(program),
        pid,
        message,
        // The app name is a field of its own, not a tag in front of the message.
        tagged: message,
    })
}

/// What a line starts with: an RFC 5424 header (all of the prefix), or a time (perhaps none),
/// the cursor after it.
enum Leading<'a> {
    Rfc5424(Prefixed<'a>),
    Time(Option<LogTime>),
}

fn leading<'a>(cursor: &mut Cursor<'a>) -> Leading<'a> {
    // `<PRI>`, as a network syslog writes it to a file or pipe.
    let _: Option<()> = cursor.attempt(|c| {
        c.eat(b'<').then_some(())?;
        let (priority, _) = c.some_digits(3)?;
        (priority <= 191 && c.eat(b'>')).then_some(())
    });
    if let Some(parsed) = parse_rfc5424(cursor.rest()) {
        return Leading::Rfc5424(parsed);
    }
    let tai = cursor.attempt(|c| {
        let time = tai64n_time(c)?;
        c.eat(b' ').then_some(time)
    });
    let time = cursor
        .attempt(|c| {
            let time = line_time(c)?;
            c.eat(b' ').then_some(time)
        })
        .or(tai);
    Leading::Time(time)
}

/// The time of a line's prefix, as [`parse`] gives it, without reading the tag: for readers
/// of whole lines that only want the time.
pub fn leading_time(line: &str) -> Option<LogTime> {
    match leading(&mut Cursor::new(line)) {
        Leading::Rfc5424(parsed) => parsed.time,
        Leading::Time(time) => time,
    }
}

/// Split `line` into its prefix and message. A line with no syslog shape has no program and
/// its whole text (after any time it starts with) as the message.
pub fn parse(line: &str) -> Prefixed<'_> {
    let mut cursor = Cursor::new(line);
    let time = match leading(&mut cursor) {
        Leading::Rfc5424(parsed) => return parsed,
        Leading::Time(time) => time,
    };
    let after_time = cursor.rest();
    let unparsed = Prefixed {
        time,
        host: None,
        program: None,
        pid: None,
        message: after_time,
        tagged: after_time,
    };
    if time.is_none() {
        // Without a time: a bare tag (`sshd[1]: ...`, as s6-log or a daemon's own file
        // writes it), or a host name and a tag (the journal's fields without the time).
        if after_time.starts_with(' ') {
            return unparsed;
        }
        if let Some((program, pid, message)) = tag(after_time) {
            return Prefixed {
                program: Some(program),
                pid,
                message: strip_solaris_id(message),
                tagged: after_time,
                ..unparsed
            };
        }
        let Some((host, tagged)) = after_time.split_once(' ') else {
            return unparsed;
        };
        return match tag(tagged) {
            Some((program, pid, message)) if is_host_name(host) => Prefixed {
                host: Some(host),
                program: Some(program),
                pid,
                message: strip_solaris_id(message),
                tagged,
                ..unparsed
            },
            _ => unparsed,
        };
    }
    // `HOST TAG: msg` or `TAG: msg`: a first word that ends a tag is the tag.
    let first_end = space(after_time);
    let first = &after_time[..first_end];
    let (host, tagged) = if first.ends_with(':') {
        (None, after_time)
    } else {
        (Some(first), after_time.get(first_end + 1..).unwrap_or(""))
    };
    match tag(tagged) {
        Some((program, pid, message)) if host.is_none_or(|h| !h.is_empty()) => Prefixed {
            time,
            host,
            program: Some(program),
            pid,
            message: strip_solaris_id(message),
            tagged,
        },
        _ => unparsed,
    }
}

/// Whether `program` is one `pattern` names: exactly, or with `*` standing for any run of
/// characters (`postfix*/smtpd` takes `postfix/smtpd`, `postfix/submission/smtpd`,
/// `postfix-out/smtpd`).
pub fn program_matches(pattern: &str, program: &str) -> bool {
    let Some((head, starred)) = pattern.split_once('*') else {
        return pattern == program;
    };
    let Some(mut rest) = program.strip_prefix(head) else {
        return false;
    };
    // After the first `*`: the parts between stars are found in order, the last one ends
    // the program.
    let (middle, tail) = starred.rsplit_once('*').unwrap_or(("", starred));
    for part in middle.split('*').filter(|p| !p.is_empty()) {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= tail.len() && rest.ends_with(tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[expect(
        clippy::unnecessary_wraps,
        reason = "the case table's time column is an Option: its `None` rows are written out"
    )]
    fn time(
        year: Option<i32>,
        [month, day, hour, minute, second]: [u8; 5],
        nanos: u32,
        offset: Option<i32>,
    ) -> Option<LogTime> {
        Some(LogTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            nanos,
            offset,
        })
    }

    /// (line, time, host, program, pid, message).
    type Case<'a> = (
        &'a str,
        Option<LogTime>,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
        &'a str,
    );

    /// Every shape the layer knows.
    #[test]
    fn prefixes_case_by_case() {
        let cases: &[Case<'_>] = &[
            // RFC 3164, space-padded day, with and without a host.
            (
                "Jan  5 01:31:41 www sshd[1643]: ROOT LOGIN REFUSED FROM 192.0.2.4",
                time(None, [1, 5, 1, 31, 41], 0, None),
                Some("www"),
                Some("sshd"),
                Some("1643"),
                "ROOT LOGIN REFUSED FROM 192.0.2.4",
            ),
            (
                "Jan  5 01:31:41 sshd[1643]: Invalid user a from 192.0.2.4",
                time(None, [1, 5, 1, 31, 41], 0, None),
                None,
                Some("sshd"),
                Some("1643"),
                "Invalid user a from 192.0.2.4",
            ),
            // `<PRI>` and no pid.
            (
                "<38>Feb 25 14:34:10 belka sshd: message",
                time(None, [2, 25, 14, 34, 10], 0, None),
                Some("belka"),
                Some("sshd"),
                None,
                "message",
            ),
            // journalctl -o short (zero-padded day), short-precise.
            (
                "Jan 02 03:04:05 host sshd-session[7]: x",
                time(None, [1, 2, 3, 4, 5], 0, None),
                Some("host"),
                Some("sshd-session"),
                Some("7"),
                "x",
            ),
            (
                "Jan 02 03:04:05.123456 host postfix/submission/smtpd[99]: warning: y",
                time(None, [1, 2, 3, 4, 5], 123_456_000, None),
                Some("host"),
                Some("postfix/submission/smtpd"),
                Some("99"),
                "warning: y",
            ),
            // short-iso, short-iso-precise, RFC 3339 with Z and a fraction.
            (
                "2024-01-02T03:04:05+0100 host sshd-auth[8]: z",
                time(Some(2024), [1, 2, 3, 4, 5], 0, Some(3600)),
                Some("host"),
                Some("sshd-auth"),
                Some("8"),
                "z",
            ),
            (
                "2024-01-02T03:04:05.5-05:30 h dovecot: imap-login: a",
                time(
                    Some(2024),
                    [1, 2, 3, 4, 5],
                    500_000_000,
                    Some(-(5 * 3600 + 30 * 60)),
                ),
                Some("h"),
                Some("dovecot"),
                None,
                "imap-login: a",
            ),
            (
                "2016-11-21T09:51:57.093825Z host sshd[1]: m",
                time(Some(2016), [11, 21, 9, 51, 57], 93_825_000, Some(0)),
                Some("host"),
                Some("sshd"),
                Some("1"),
                "m",
            ),
            // journalctl -o short-full.
            (
                "Tue 2024-01-02 03:04:05 UTC host sshd[1]: m",
                time(Some(2024), [1, 2, 3, 4, 5], 0, Some(0)),
                Some("host"),
                Some("sshd"),
                Some("1"),
                "m",
            ),
            // RFC 5424 with structured data and a BOM.
            (
                "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com sshd 4321 ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"Appl]ication\"] \u{feff}Failed password",
                time(Some(2003), [10, 11, 22, 14, 15], 3_000_000, Some(0)),
                Some("mymachine.example.com"),
                Some("sshd"),
                Some("4321"),
                "Failed password",
            ),
            (
                "<13>1 2024-01-02T03:04:05+00:00 - postfix/smtpd - - - warning: x",
                time(Some(2024), [1, 2, 3, 4, 5], 0, Some(0)),
                None,
                Some("postfix/smtpd"),
                None,
                "warning: x",
            ),
            // TAI64N, then a bare tag (s6-log, daemontools multilog).
            (
                "@400000005f5e1000000003e8 sshd[5]: m",
                Some(LogTime::from_unix(0x5f5e_1000 - 10, 1000)),
                None,
                Some("sshd"),
                Some("5"),
                "m",
            ),
            // Solaris.
            (
                "Mar 29 05:59:23 dusky sshd[20878]: [ID 800047 auth.info] Failed none for x",
                time(None, [3, 29, 5, 59, 23], 0, None),
                Some("dusky"),
                Some("sshd"),
                Some("20878"),
                "Failed none for x",
            ),
            // A year after the time.
            (
                "Jun 21 2005 16:47:48 h sshd[1]: m",
                None,
                None,
                None,
                None,
                "Jun 21 2005 16:47:48 h sshd[1]: m",
            ),
            (
                "Jun 21 16:47:48 2005 h sshd[1]: m",
                time(Some(2005), [6, 21, 16, 47, 48], 0, None),
                Some("h"),
                Some("sshd"),
                Some("1"),
                "m",
            ),
            // Not syslog: a web access log keeps its whole text.
            (
                "192.0.2.1 - - [10/Oct/2000:13:55:36 -0700] \"GET / HTTP/1.0\" 200 2326",
                None,
                None,
                None,
                None,
                "192.0.2.1 - - [10/Oct/2000:13:55:36 -0700] \"GET / HTTP/1.0\" 200 2326",
            ),
            // A tag in brackets, no host.
            (
                "Mar  3 00:17:22 [sshd]: User root from 192.0.2.9 not allowed",
                time(None, [3, 3, 0, 17, 22], 0, None),
                None,
                Some("sshd"),
                None,
                "User root from 192.0.2.9 not allowed",
            ),
            // The journal's fields without a time: host and tag.
            (
                "srv sshd[13709]: error: PAM: Authentication failure for a from 192.0.2.6",
                None,
                Some("srv"),
                Some("sshd"),
                Some("13709"),
                "error: PAM: Authentication failure for a from 192.0.2.6",
            ),
            // A pid that is not a number is not a tag.
            (
                "Jan  5 01:31:41 www sshd[x]: m",
                time(None, [1, 5, 1, 31, 41], 0, None),
                None,
                None,
                None,
                "www sshd[x]: m",
            ),
        ];
        for (line, time, host, program, pid, message) in cases {
            let parsed = parse(line);
            assert_eq!(
                (
                    parsed.time,
                    parsed.host,
                    parsed.program,
                    parsed.pid,
                    parsed.message
                ),
                (*time, *host, *program, *pid, *message),
                "{line}"
            );
        }
    }

    #[test]
    fn times_of_lines_without_a_syslog_shape() {
        assert_eq!(
            LogTime::find("192.0.2.1 - - [10/Oct/2000:13:55:36 -0700] \"GET / HTTP/1.0\" 200"),
            time(Some(2000), [10, 10, 13, 55, 36], 0, Some(-7 * 3600))
        );
        assert_eq!(
            LogTime::find("2012/04/09 11:53:29 [error] 2865#0: *66647 user \"xyz\" was not found"),
            time(Some(2012), [4, 9, 11, 53, 29], 0, None)
        );
        assert_eq!(
            LogTime::find("[Sun Jul 17 22:18:05.123456 2016] [auth_basic:error] [pid 1]"),
            time(Some(2016), [7, 17, 22, 18, 5], 123_456_000, None)
        );
        for line in [
            "Sat Nov 22 10:00:01 2026 [pid 4100] [ftp] FAIL LOGIN: Client \"203.0.113.9\"",
            "[2026-11-22 10:00:01] NOTICE[123] chan_sip.c: Registration failed",
            "[20261122-10:00:01] [INFO ] connection received",
            "{\"t\":{\"$date\":\"2026-11-22T10:00:01.000+00:00\"},\"s\":\"I\"}",
            "2026/11/22 10:00:01 [2101] connect from mirror.example.net (198.51.100.20)",
            "[22-Nov-2026 10:00:01 +0000]: <abc> IMAP Error: Login failed",
            "[2026-11-22 10:00:01.201][vaultwarden::api][ERROR] Username or password is incorrect.",
            "2026-11-22T10:00:01.667Z: Failed Login: username=x ip=203.0.113.9",
        ] {
            let time = LogTime::find(line).unwrap_or_else(|| panic!("{line}"));
            assert_eq!(
                (time.year, time.month, time.day, time.hour, time.second),
                (Some(2026), 11, 22, 10, 1),
                "{line}"
            );
        }
        let serilog =
            LogTime::find("2019-11-26 01:04:49.008 +08:00 [WRN] Failed login attempt").unwrap();
        assert_eq!((serilog.hour, serilog.offset), (1, Some(8 * 3600)));
        let bracketed = LogTime::find("[Nov 22 10:00:01] NOTICE[1] x").unwrap();
        assert_eq!((bracketed.year, bracketed.day), (None, 22));
        assert_eq!(LogTime::find("no time here"), None);
    }

    #[test]
    fn unix_times_and_civil_text() {
        let t = time(Some(2000), [10, 10, 13, 55, 36], 0, Some(-7 * 3600)).unwrap();
        assert_eq!(t.unix(1970), 971_211_336);
        assert_eq!(t.civil_text(0), "2000-10-10T13:55:36");
        let leap = time(None, [2, 29, 0, 0, 0], 0, None).unwrap();
        assert_eq!(leap.unix(2024), 1_709_164_800);
        for days in [-1_000_000_i64, -1, 0, 1, 59, 60, 10_957, 19_782, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn program_patterns() {
        for (pattern, program, expected) in [
            ("sshd", "sshd", true),
            ("sshd", "sshd-session", false),
            ("sshd*", "sshd-session", true),
            ("postfix*/smtpd", "postfix/smtpd", true),
            ("postfix*/smtpd", "postfix/submission/smtpd", true),
            ("postfix*/smtpd", "postfix/smtpd/x", false),
            ("postfix*/smtpd", "postfix", false),
            ("*/smtpd", "postfix-out/smtpd", true),
            ("a*b*c", "abc", true),
            ("a*b*c", "ac", false),
        ] {
            assert_eq!(
                program_matches(pattern, program),
                expected,
                "{pattern} {program}"
            );
        }
    }
}
