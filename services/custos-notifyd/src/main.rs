//! `custos-notifyd`, the SMTP notifier (§14). It reaches the store through
//! custos-keyd's local socket (never opening it, never reading the master
//! key; only the SMTP password crosses in clear) and, every few seconds:
//!
//! 1. turns new audit entries into Generic notices for the groups whose
//!    threshold, scope and filter match (the store remembers how far it has
//!    read, so nothing is missed or sent twice across restarts);
//! 2. every few minutes, queues the Key Expiration and Certificate
//!    Expiration notices that are due (90, 60 and 15 days before, 7 after);
//! 3. delivers the notices that are due from the outbox. A failed delivery
//!    is retried with back-off (doubling up to a limit) and given up after
//!    a while; a refusal by the server (5xx) is given up at once. Failures
//!    are written to the audit log as this daemon's own entries, which never
//!    become notices themselves, so there is no mail loop.
//!
//! It is its own unit: a slow or broken mail server delays mail and nothing
//! else. Ready: `ready notify` on stdout and sd_notify READY=1; SIGTERM
//! stops it between two deliveries.

mod config;

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use appliance::local::{Client, Role};
use appliance::model::Severity;
use appliance::store::Notice;
use clap::Parser;
use custos_notifyd::{MailError, Mailer, notice_mail};
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::config::{Config, Flags};

/// Audit entries read per transaction.
const LOG_BATCH: i64 = 500;
/// Notices delivered per round.
const DELIVERY_BATCH: i64 = 50;

/// The time of the schedule: the system's, or (tests only) shifted by the
/// number of days in a file.
#[derive(Debug, Clone)]
enum Clock {
    System,
    TestOffset(std::path::PathBuf),
}

impl Clock {
    fn now(&self) -> anyhow::Result<OffsetDateTime> {
        let now = OffsetDateTime::now_utc();
        match self {
            Clock::System => Ok(now),
            Clock::TestOffset(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the test clock {}", path.display()))?;
                let days: i64 = text.trim().parse().with_context(|| {
                    format!(
                        "the test clock {} must hold a whole number of days",
                        path.display()
                    )
                })?;
                Ok(now + time::Duration::days(days))
            }
        }
    }
}

/// Runs a request to keyd off the async threads.
async fn store<T: Send + 'static>(
    store: &Arc<Client>,
    f: impl FnOnce(&Client) -> appliance::local::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let s = store.clone();
    Ok(tokio::task::spawn_blocking(move || f(&s)).await??)
}

/// Whether a failure is keyd being down (the client logged it once).
fn keyd_down(e: &anyhow::Error) -> bool {
    e.downcast_ref::<appliance::local::Error>()
        .is_some_and(|e| e.is_unavailable())
}

/// Whether mail is getting through, to log an outage once, not per notice.
#[derive(Debug, Default)]
struct Delivery {
    /// The server and error of the outage in progress.
    failing: Option<String>,
    /// The "SMTP server not set" warning was logged.
    unset_logged: bool,
}

struct Notifier {
    store: Arc<Client>,
    cfg: Config,
    clock: Clock,
    delivery: Delivery,
    next_expiry_scan: Instant,
}

impl Notifier {
    /// One round: read the log, look for expiries when it is time, deliver.
    async fn round(&mut self, stop: &mut watch::Receiver<bool>) -> anyhow::Result<()> {
        let now = self.clock.now()?;
        loop {
            let read = store(&self.store, move |s| s.notify_queue_log(now, LOG_BATCH)).await?;
            if read < LOG_BATCH as usize {
                break;
            }
        }
        if Instant::now() >= self.next_expiry_scan {
            let queued = store(&self.store, move |s| s.notify_queue_expiries(now)).await?;
            if queued > 0 {
                tracing::info!(queued, "expiry notices queued");
            }
            self.next_expiry_scan = Instant::now() + self.cfg.expiry_interval;
        }
        self.deliver(now, stop).await
    }

    async fn deliver(
        &mut self,
        now: OffsetDateTime,
        stop: &mut watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let due = store(&self.store, move |s| s.notify_due(now, DELIVERY_BATCH)).await?;
        if due.is_empty() {
            return Ok(());
        }
        // Notices waiting longer than allowed are given up first.
        let give_up = self.cfg.give_up_after;
        let (stale, due): (Vec<Notice>, Vec<Notice>) =
            due.into_iter().partition(|n| now - n.created_at > give_up);
        self.abandon_stale(stale, now).await?;
        let Some(smtp) = store(&self.store, |s| s.smtp_config()).await? else {
            if !due.is_empty() && !self.delivery.unset_logged {
                tracing::warn!(
                    waiting = due.len(),
                    "notices wait: {}",
                    appliance::store::SMTP_NOT_SET
                );
                self.delivery.unset_logged = true;
            }
            return Ok(());
        };
        self.delivery.unset_logged = false;
        let mailer = match Mailer::new(&smtp, &self.cfg.host_name) {
            Ok(m) => m,
            Err(e) => {
                // The settings themselves are unusable: nothing can go out
                // until an administrator fixes them.
                self.outage(&smtp.describe(), &e).await?;
                return Ok(());
            }
        };
        for notice in due {
            let (subject, body) = notice_mail(&notice, &self.cfg.host_name);
            let outcome = tokio::select! {
                r = mailer.send(&notice.recipients, &subject, body) => r,
                _ = stop.changed() => return Ok(()),
            };
            match outcome {
                Ok(()) => {
                    let id = notice.id;
                    store(&self.store, move |s| s.notify_sent(id, now)).await?;
                    tracing::info!(group = %notice.group, notice = %notice.summary, "notice sent");
                    if let Some(server) = self.delivery.failing.take() {
                        let what = format!("email notices are delivered again through {server}");
                        store(&self.store, move |s| s.notify_log(Severity::Info, &what)).await?;
                    }
                }
                Err(e) if e.permanent() => {
                    let (id, error) = (notice.id, e.to_string());
                    store(&self.store, move |s| s.notify_abandon(id, &error, now)).await?;
                    let what = format!(
                        "email notice of group {} to {} was refused by {} and is given up: {e} ({})",
                        notice.group,
                        notice.recipients.join(", "),
                        mailer.server(),
                        notice.summary
                    );
                    tracing::error!("{what}");
                    store(&self.store, move |s| s.notify_log(Severity::Error, &what)).await?;
                }
                Err(e) => {
                    let wait = self.backoff(notice.attempts);
                    let (id, error) = (notice.id, e.to_string());
                    store(&self.store, move |s| s.notify_retry(id, &error, now + wait)).await?;
                    self.outage(mailer.server(), &e).await?;
                    // The server is unreachable or busy: the other notices
                    // wait for the next round instead of failing in a row.
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The wait before retry number `attempts + 1`.
    fn backoff(&self, attempts: i64) -> time::Duration {
        let shift = u32::try_from(attempts.clamp(0, 20)).unwrap_or(20);
        let secs = self
            .cfg
            .retry_min
            .as_secs()
            .saturating_mul(1u64 << shift)
            .min(self.cfg.retry_max.as_secs());
        time::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX))
    }

    /// Logs the start of a delivery outage (once until mail gets through).
    async fn outage(&mut self, server: &str, e: &MailError) -> anyhow::Result<()> {
        tracing::warn!(server, error = %e, "email delivery failed; retrying with back-off");
        if self.delivery.failing.is_none() {
            self.delivery.failing = Some(server.to_owned());
            let what = format!(
                "email notices cannot be delivered through {server}: {e}; they are retried with back-off"
            );
            store(&self.store, move |s| s.notify_log(Severity::Warn, &what)).await?;
        }
        Ok(())
    }

    async fn abandon_stale(&self, stale: Vec<Notice>, now: OffsetDateTime) -> anyhow::Result<()> {
        if stale.is_empty() {
            return Ok(());
        }
        let hours = self.cfg.give_up_after.whole_hours();
        let count = stale.len();
        let groups: std::collections::BTreeSet<String> =
            stale.iter().map(|n| n.group.clone()).collect();
        for n in stale {
            let id = n.id;
            let error = format!("not delivered within {hours} hours");
            store(&self.store, move |s| s.notify_abandon(id, &error, now)).await?;
        }
        let what = format!(
            "gave up {count} email notice(s) of group(s) {} not delivered within {hours} hours",
            groups.into_iter().collect::<Vec<_>>().join(", ")
        );
        tracing::error!("{what}");
        store(&self.store, move |s| s.notify_log(Severity::Error, &what)).await
    }
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    let st = Arc::new(Client::new(&cfg.keyd_socket, Role::Notify));
    let clock = match &cfg.test_clock_offset_file {
        None => Clock::System,
        Some(path) => {
            tracing::warn!(
                file = %path.display(),
                "TEST CLOCK: the schedule's time is shifted by the days in this file; never use this on an appliance"
            );
            Clock::TestOffset(path.clone())
        }
    };
    // Start reading the log here, so every entry written after the ready
    // line is considered.
    // keyd may start later: then the first round does it.
    let now = clock.now()?;
    if let Err(e) = store(&st, move |s| s.notify_queue_log(now, LOG_BATCH)).await
        && !keyd_down(&e)
    {
        tracing::error!("reading the audit log: {e:#}");
    }

    let (stop_tx, mut stop_rx) = watch::channel(false);
    let mut notifier = Notifier {
        store: st,
        cfg: cfg.clone(),
        clock,
        delivery: Delivery::default(),
        next_expiry_scan: Instant::now(),
    };
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(notifier.cfg.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop_rx.changed() => return,
            }
            if let Err(e) = notifier.round(&mut stop_rx).await
                && !keyd_down(&e)
            {
                tracing::error!("notification round failed: {e:#}");
            }
            if *stop_rx.borrow() {
                return;
            }
        }
    });

    let mut out = std::io::stdout().lock();
    writeln!(out, "ready notify")?;
    out.flush()?;
    drop(out);
    appliance::daemon::notify_ready();

    appliance::daemon::shutdown_signal().await;
    tracing::info!("stopping");
    appliance::daemon::notify_stopping();
    stop_tx.send(true).ok();
    task.await.context("the notification task")?;
    tracing::info!("stopped");
    Ok(())
}

fn main() -> std::process::ExitCode {
    appliance::daemon::init_logging();
    let flags = Flags::parse();
    let result = Config::load(flags).and_then(|cfg| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the runtime")?
            .block_on(run(cfg))
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("custos-notifyd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
