//! Log lines to standard error: with a time and level on a terminal or in a file, or, when
//! standard error is the journal (`JOURNAL_STREAM` names it), with a syslog priority prefix
//! (`<3>` error ... `<7>` debug) and no time of their own, since the journal stamps each line.
use std::io::Write as _;

pub fn init() {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if stderr_is_journal() {
        let _: &mut env_logger::Builder = builder.format(|out, record| {
            let priority = priority(record.level());
            // Every line of a message is its own journal entry: each gets the priority.
            for line in record.args().to_string().lines() {
                writeln!(out, "<{priority}>{line}")?;
            }
            Ok(())
        });
    }
    builder.init();
}

/// sd-daemon(3)'s levels.
const fn priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// Whether fd 2 is the stream `JOURNAL_STREAM` (`DEVICE:INODE`) names: systemd sets it for the
/// service's own output, and a child whose stderr was redirected inherits the variable but not
/// the stream (systemd.exec(5)).
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((device, inode)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(device), Ok(inode)) = (device.parse::<u64>(), inode.parse::<u64>()) else {
        return false;
    };
    // SAFETY: fstat writes into the zeroed struct it is given; fd 2 may be closed (an error).
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(2, &raw mut stat) } != 0 {
        return false;
    }
    stat.st_dev == device && stat.st_ino == inode
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_follow_sd_daemon() {
        assert_eq!(priority(log::Level::Error), 3);
        assert_eq!(priority(log::Level::Warn), 4);
        assert_eq!(priority(log::Level::Info), 6);
        assert_eq!(priority(log::Level::Trace), 7);
    }
}
