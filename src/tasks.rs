//! Named background tasks with one shutdown signal: each loop the daemon runs besides
//! serving (the reconciler, housekeeping) is started here under its name, sees the signal
//! at its next await, and is waited for (then aborted past a grace period) at shutdown.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, info_span, warn, Instrument};

/// The daemon's background tasks.
pub struct Tasks {
    stop: watch::Sender<bool>,
    running: Mutex<Vec<(&'static str, JoinHandle<()>)>>,
}

/// A task's view of the shutdown signal.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Resolves once shutdown was asked for.
    pub async fn requested(&mut self) {
        let _ = self.0.wait_for(|s| *s).await;
    }
}

impl Default for Tasks {
    fn default() -> Self {
        Tasks {
            stop: watch::channel(false).0,
            running: Mutex::new(Vec::new()),
        }
    }
}

impl Tasks {
    /// Starts `task` under `name` (its log lines carry `task = name`).
    pub fn spawn<F, Fut>(&self, name: &'static str, task: F)
    where
        F: FnOnce(Shutdown) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let fut = task(Shutdown(self.stop.subscribe()));
        let h = tokio::spawn(fut.instrument(info_span!("task", task = name)));
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((name, h));
    }

    /// Runs `tick` every `period` (the first after one period) until shutdown; a tick in
    /// progress finishes first.
    pub fn every<F, Fut>(&self, name: &'static str, period: Duration, mut tick: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.spawn(name, move |mut stop| async move {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval.tick().await;
            loop {
                tokio::select! {
                    _ = stop.requested() => return,
                    _ = interval.tick() => tick().await,
                }
            }
        });
    }

    /// Signals every task and waits up to `grace` for each; aborts the late ones.
    pub async fn shutdown(&self, grace: Duration) {
        let _ = self.stop.send(true);
        let running = std::mem::take(&mut *self.running.lock().unwrap_or_else(|p| p.into_inner()));
        let deadline = tokio::time::Instant::now() + grace;
        for (name, mut h) in running {
            match tokio::time::timeout_at(deadline, &mut h).await {
                Ok(_) => info!(task = name, "stopped"),
                Err(_) => {
                    warn!(task = name, "did not stop in time; aborted");
                    h.abort();
                }
            }
        }
    }

    /// The names of the tasks started and not yet shut down.
    pub fn names(&self) -> Vec<&'static str> {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(n, _)| *n)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn tasks_tick_until_shutdown_and_late_ones_are_aborted() {
        let tasks = Tasks::default();
        let ticks = Arc::new(AtomicUsize::new(0));
        let t = ticks.clone();
        tasks.every("ticker", Duration::from_secs(1), move || {
            let t = t.clone();
            async move {
                t.fetch_add(1, Ordering::SeqCst);
            }
        });
        tasks.spawn("stubborn", |_stop| std::future::pending());
        assert_eq!(tasks.names(), vec!["ticker", "stubborn"]);
        tokio::time::sleep(Duration::from_millis(3500)).await;
        assert_eq!(ticks.load(Ordering::SeqCst), 3);
        tasks.shutdown(Duration::from_secs(5)).await;
        assert!(tasks.names().is_empty());
        let after = ticks.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(ticks.load(Ordering::SeqCst), after, "ticks after shutdown");
    }
}
