//! A peer's thread: a current-thread tokio runtime of its own that runs the peer's loop until
//! told to stop. The owner and the packet path never see the runtime.
use std::future::Future;

use tokio::sync::watch;

/// A running peer thread; stopped (and joined) on [`PeerThread::stop`] or drop.
pub struct PeerThread {
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
    name: &'static str,
}

impl PeerThread {
    /// Start thread `name` running `body(stopped)`; `stopped` changes when it is to return.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn spawn<F, Fut>(name: &'static str, body: F) -> std::io::Result<Self>
    where
        F: FnOnce(watch::Receiver<bool>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let (stop, stopped) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(body(stopped)),
                    Err(err) => log::error!("{name}: no runtime: {err}"),
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
            name,
        })
    }

    /// Tell the loop to return, and wait for the thread.
    pub fn stop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            log::error!("{}: the thread panicked", self.name);
        }
    }
}

impl Drop for PeerThread {
    fn drop(&mut self) {
        self.stop();
    }
}
