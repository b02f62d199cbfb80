//! Time, injected: everything time-based takes a [`Clock`] so tests can move it.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Two clocks: wall time for what is stored (it survives reboots), and the kernel's monotonic
/// clock for what goes in the maps (the clock `bpf_ktime_get_ns` reads).
pub trait Clock: Send + Sync {
    /// Seconds since the Unix epoch.
    fn now_unix(&self) -> u64;
    /// `CLOCK_MONOTONIC` nanoseconds.
    fn now_monotonic_ns(&self) -> u64;

    /// The map expiry for a wall-clock expiry `expires_unix` (0 = never).
    fn monotonic_deadline(&self, expires_unix: u64) -> u64 {
        if expires_unix == 0 {
            return 0;
        }
        let remaining = expires_unix.saturating_sub(self.now_unix());
        // Never 0 (that means "never"): an already expired entry gets "1 ns after boot".
        self.now_monotonic_ns()
            .saturating_add(remaining.saturating_mul(1_000_000_000))
            .max(1)
    }
}

/// The real clocks.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs()
    }

    fn now_monotonic_ns(&self) -> u64 {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid pointer to a timespec; CLOCK_MONOTONIC always exists.
        let _: libc::c_int = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut now) };
        u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000
            + u64::try_from(now.tv_nsec).unwrap_or(0)
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock {
    unix: std::sync::atomic::AtomicU64,
    monotonic_ns: std::sync::atomic::AtomicU64,
}

impl ManualClock {
    pub const fn new(unix: u64) -> Self {
        Self {
            unix: std::sync::atomic::AtomicU64::new(unix),
            monotonic_ns: std::sync::atomic::AtomicU64::new(1_000_000_000),
        }
    }

    pub fn advance(&self, by: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let _: u64 = self.unix.fetch_add(by.as_secs(), Relaxed);
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _: u64 = self.monotonic_ns.fetch_add(nanos, Relaxed);
    }
}

impl Clock for ManualClock {
    fn now_unix(&self) -> u64 {
        self.unix.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn now_monotonic_ns(&self) -> u64 {
        self.monotonic_ns.load(std::sync::atomic::Ordering::Relaxed)
    }
}
