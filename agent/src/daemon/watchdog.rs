//! systemd's watchdog (`WatchdogSec=`): `WATCHDOG=1` every half period, only while the
//! decision owner answers a ping and the log thread's rounds go on. When either stops, the
//! notifications stop and systemd restarts the service (the XDP program keeps enforcing
//! meanwhile, and the new daemon adopts it).
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::enforce::owner::Handle;

/// The running heartbeat; stopped on drop.
pub struct Watchdog {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// The period systemd asked for: `WATCHDOG_USEC`, when `WATCHDOG_PID` is unset or ours.
pub fn period_from_env() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID")
        && pid.to_str().and_then(|p| p.parse::<u32>().ok()) != Some(std::process::id())
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// What one look at the threads found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Alive,
    OwnerSilent,
    LogsStuck,
}

/// Looks at the owner and the log thread, remembering the rounds seen last time.
pub struct Probe {
    owner: Handle,
    log_rounds: Arc<AtomicU64>,
    last_rounds: u64,
}

impl Probe {
    pub fn new(owner: Handle, log_rounds: Arc<AtomicU64>) -> Self {
        let last_rounds = log_rounds.load(Ordering::Relaxed);
        Self {
            owner,
            log_rounds,
            last_rounds,
        }
    }

    /// Ping the owner (waiting up to `patience`) and compare the log rounds with last time.
    pub fn look(&mut self, patience: Duration) -> Health {
        if self.owner.ping().wait_timeout(patience).is_err() {
            return Health::OwnerSilent;
        }
        let rounds = self.log_rounds.load(Ordering::Relaxed);
        let turned = rounds != self.last_rounds;
        self.last_rounds = rounds;
        if turned {
            Health::Alive
        } else {
            Health::LogsStuck
        }
    }
}

impl Watchdog {
    /// Start notifying every `period / 2` (at least every 50 ms).
    pub fn start(period: Duration, mut probe: Probe) -> std::io::Result<Self> {
        let every = (period / 2).max(Duration::from_millis(50));
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || {
                let mut last = Health::Alive;
                loop {
                    match stopped.recv_timeout(every) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                    let health = probe.look(every / 2);
                    if health == Health::Alive {
                        super::sd_notify("WATCHDOG=1");
                    } else if health != last {
                        log::error!(
                            "watchdog: {}; not telling systemd we are alive (it restarts the \
                             service after WatchdogSec=)",
                            match health {
                                Health::OwnerSilent => "the decision owner did not answer a ping",
                                _ => "the log thread has not turned since the last look",
                            }
                        );
                    }
                    last = health;
                }
            })?;
        log::info!("systemd watchdog: notifying every {every:?}");
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enforce::owner::handle::Command;

    #[test]
    fn alive_only_while_the_owner_answers_and_the_logs_turn() {
        let (commands, inbox) = mpsc::channel::<Command>();
        let rounds = Arc::new(AtomicU64::new(0));
        let mut probe = Probe::new(Handle::new(commands), Arc::clone(&rounds));
        // Nobody serves the owner's inbox: silent.
        assert_eq!(probe.look(Duration::from_millis(20)), Health::OwnerSilent);
        let server = std::thread::spawn(move || {
            while let Ok(command) = inbox.recv() {
                if let Command::Ping { done } = command {
                    let _ = done.send(Ok(()));
                }
            }
        });
        // Served, but the logs never turned.
        assert_eq!(probe.look(Duration::from_secs(5)), Health::LogsStuck);
        let _: u64 = rounds.fetch_add(3, Ordering::Relaxed);
        assert_eq!(probe.look(Duration::from_secs(5)), Health::Alive);
        assert_eq!(probe.look(Duration::from_secs(5)), Health::LogsStuck);
        drop(probe);
        server.join().unwrap();
    }
}
