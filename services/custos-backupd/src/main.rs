//! `custos-backupd`, the automatic backup of spec §12: it runs the schedule
//! kept in the store (daily or weekly, at a UTC time), answers "Backup Now"
//! within two seconds, and pushes each backup, encrypted with the wrapper
//! key, to the SCP target with the appliance's own SSH key.
//!
//! * The target's host key is checked before the appliance authenticates:
//!   learned and pinned on first contact, and a different key refuses the
//!   push (an ERROR entry naming both fingerprints, nothing sent).
//! * Every attempt goes into the history and the audit log (INFO when
//!   pushed, ERROR when not, which is what §14 mails). A failed push is
//!   retried with back-off (`--retry-base-secs`, doubling, at most
//!   `--retry-max-secs`, `--attempts` in all) unless retrying cannot help:
//!   a changed host key, no wrapper key, or the settings removed meanwhile.
//!   A retry chain lives in memory: a restart ends it.
//! * The push runs on a blocking thread (ssh2 is blocking) and writes its
//!   file, streamed encrypted by custos-keyd, to the spool directory
//!   (`--spool-dir`, default the temporary directory), removed afterwards.
//!   The daemon never opens the store nor reads the master key: it asks
//!   custos-keyd over its local socket for the backup role's operations,
//!   and its audit entries name it `custos-backupd`. Only the appliance's
//!   SSH private key crosses in clear, for libssh2.
//! * SIGTERM lets a push in progress finish for `--stop-grace-secs`, then
//!   abandons it by shutting its connection down (recorded as failed).

mod config;
mod push;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use appliance::local::{Client, Role};
use appliance::store::{BackupRun, RunKind, Schedule, ScpTarget};
use clap::Parser;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::config::{Config, Flags};
use crate::push::{Abort, Attempt};

/// How often keyd is asked for "Backup Now" and changed settings.
const POLL: Duration = Duration::from_secs(2);

/// A push to make: what started it and which attempt this is.
#[derive(Debug, Clone, Copy)]
struct Job {
    kind: RunKind,
    attempt: u32,
}

/// How far back a changed schedule is planned from at most (see
/// [`plan_from`]).
const CHANGE_LOOKBACK: time::Duration = time::Duration::seconds(10);

/// The schedule as last seen, when it runs next, and when keyd was last
/// asked.
#[derive(Debug, Default)]
struct Next {
    seen: Option<(Schedule, ScpTarget)>,
    at: Option<OffsetDateTime>,
    polled: Option<OffsetDateTime>,
}

/// The instant a schedule seen changed at `now` is planned from: the
/// previous poll, since the change was made after it. A schedule set at
/// 14:29:59 for 14:30 and read at 14:30:01 then runs at once, not
/// tomorrow; a run that already happened this minute is not repeated (its
/// poll was at or after the minute). Never more than [`CHANGE_LOOKBACK`]
/// back: after keyd was away the previous poll may be old. At start there
/// is no previous poll: from now.
fn plan_from(polled: Option<OffsetDateTime>, now: OffsetDateTime) -> OffsetDateTime {
    polled.map_or(now, |p| p.clamp(now - CHANGE_LOOKBACK, now))
}

struct Daemon {
    cfg: Config,
    store: Arc<Client>,
    tmp_dir: PathBuf,
}

impl Daemon {
    /// The host name for the backup file: the flag, else the one the CLI
    /// set, else the system's.
    fn host_name(&self) -> String {
        if let Some(h) = &self.cfg.host_name {
            return h.clone();
        }
        if let Ok(Some(h)) = self.store.host_name() {
            return h;
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_owned())
            .ok()
            .filter(|s| appliance::model::check_host_name("host_name", s).is_ok())
            .unwrap_or_else(|| "custos".into())
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Client) -> appliance::local::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || f(&store)).await??)
    }

    /// Runs the schedule until `stop` turns true.
    async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut next = Next::default();
        let mut retry: Option<(Job, tokio::time::Instant)> = None;
        loop {
            if *stop.borrow() {
                return;
            }
            let job = match self.due(&mut next, &mut retry).await {
                Ok(job) => job,
                Err(e) => {
                    if !keyd_down(&e) {
                        tracing::error!(error = %format!("{e:#}"), "reading the backup settings failed");
                    }
                    None
                }
            };
            if let Some(job) = job {
                retry = self.clone().attempt(job, &mut stop).await;
                continue;
            }
            // Poll every two seconds, or wake exactly when something is due.
            let mut wait = POLL;
            if let Some((_, when)) = retry {
                wait = wait.min(when.saturating_duration_since(tokio::time::Instant::now()));
            }
            if let Some(at) = next.at {
                let left = at - OffsetDateTime::now_utc();
                wait = wait.min(Duration::try_from(left).unwrap_or(Duration::ZERO));
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// The push due now, if any: Backup Now first, then a retry, then the
    /// schedule.
    async fn due(
        &self,
        next: &mut Next,
        retry: &mut Option<(Job, tokio::time::Instant)>,
    ) -> anyhow::Result<Option<Job>> {
        let settings = self.blocking(|s| s.automatic_backup()).await?;
        let now = OffsetDateTime::now_utc();
        let current = settings.schedule.zip(settings.target.clone());
        if current != next.seen {
            next.at = settings.next_run(plan_from(next.polled, now));
            match (&current, next.at) {
                (Some((s, t)), Some(at)) => {
                    tracing::info!(schedule = %s.describe(), target = %t, next = %appliance::model::fmt_time(at), "backup schedule")
                }
                _ => tracing::info!("no backup schedule (a schedule and a target are both needed)"),
            }
            next.seen = current;
        }
        next.polled = Some(now);
        if settings.target.is_none() && retry.take().is_some() {
            tracing::info!("the target was removed: the pending retry is dropped");
        }
        if self
            .blocking(|s| s.take_backup_now_request())
            .await?
            .is_some()
        {
            if retry.take().is_some() {
                tracing::info!("Backup Now replaces the pending retry");
            }
            return Ok(Some(Job {
                kind: RunKind::Now,
                attempt: 1,
            }));
        }
        if let Some((job, when)) = *retry
            && tokio::time::Instant::now() >= when
        {
            *retry = None;
            return Ok(Some(job));
        }
        if let (Some(at), Some((schedule, _))) = (next.at, &next.seen)
            && now >= at
        {
            next.at = Some(schedule.next_after(now));
            if retry.take().is_some() {
                tracing::info!("the scheduled backup replaces the pending retry");
            }
            return Ok(Some(Job {
                kind: RunKind::Scheduled,
                attempt: 1,
            }));
        }
        Ok(None)
    }

    /// One attempt, recorded in the history; returns the retry to make.
    async fn attempt(
        self: Arc<Self>,
        job: Job,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<(Job, tokio::time::Instant)> {
        let settings = match self.blocking(|s| s.automatic_backup()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "reading the backup settings failed");
                return None;
            }
        };
        let Some(target) = settings.target else {
            tracing::info!("no SCP target: nothing to push");
            return None;
        };
        tracing::info!(kind = job.kind.as_str(), attempt = job.attempt, target = %target, "pushing a backup");
        let abort = Arc::new(Abort::default());
        let task = {
            let (me, abort, target) = (self.clone(), abort.clone(), target.clone());
            tokio::task::spawn_blocking(move || {
                let host_name = me.host_name();
                Attempt {
                    store: &me.store,
                    target: &target,
                    host_name: &host_name,
                    tmp_dir: &me.tmp_dir,
                    timeout: me.cfg.timeout,
                    abort: &abort,
                }
                .run()
            })
        };
        tokio::pin!(task);
        let outcome = tokio::select! {
            r = &mut task => r,
            _ = stop.changed() => {
                tracing::info!(grace = ?self.cfg.stop_grace, "stopping: letting the push in progress finish");
                match tokio::time::timeout(self.cfg.stop_grace, &mut task).await {
                    Ok(r) => r,
                    Err(_) => {
                        tracing::warn!("abandoning the push in progress");
                        abort.abort();
                        task.await
                    }
                }
            }
        };
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "the push task died");
                Err((
                    push::Failure {
                        message: "the push failed unexpectedly; see the service's log".into(),
                        retry: true,
                    },
                    None,
                ))
            }
        };
        let stopping = *stop.borrow();
        let (file_name, bytes, error, retry_in) = match outcome {
            Ok(p) => {
                tracing::info!(file = %p.file_name, bytes = p.bytes, target = %target, "backup pushed");
                (Some(p.file_name), Some(p.bytes), None, None)
            }
            Err((f, made)) => {
                let delay = if f.retry && !stopping {
                    self.cfg.retry.delay_after(job.attempt)
                } else {
                    None
                };
                tracing::error!(target = %target, attempt = job.attempt, error = %f.message, retry_in = ?delay, "backup push failed");
                (
                    made.as_ref().map(|m| m.file_name.clone()),
                    made.map(|m| m.bytes),
                    Some(f.message),
                    delay,
                )
            }
        };
        let run = BackupRun {
            kind: job.kind,
            attempt: job.attempt,
            attempts: self.cfg.retry.attempts,
            target,
            file_name,
            bytes,
            error,
            retry_in_secs: retry_in.map(|d| d.as_secs()),
        };
        if let Err(e) = self.blocking(move |s| s.record_backup_run(&run)).await {
            tracing::error!(error = %format!("{e:#}"), "recording the push in the history failed");
        }
        retry_in.map(|d| {
            (
                Job {
                    kind: job.kind,
                    attempt: job.attempt + 1,
                },
                tokio::time::Instant::now() + d,
            )
        })
    }
}

/// Whether a failure is keyd being down (the client logged it once).
fn keyd_down(e: &anyhow::Error) -> bool {
    e.downcast_ref::<appliance::local::Error>()
        .is_some_and(|e| e.is_unavailable())
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    let store = Arc::new(Client::new(&cfg.keyd_socket, Role::Backup));
    let tmp_dir = push::tmp_dir(&cfg.spool_dir)
        .with_context(|| format!("creating {}", cfg.spool_dir.display()))?;
    push::remove_stale(&tmp_dir);
    let daemon = Arc::new(Daemon {
        cfg,
        store,
        tmp_dir,
    });
    // The key is made once, here or when an administrator first asks for it.
    // keyd may start later: then the first push makes or loads it.
    let host = daemon.host_name();
    match daemon.blocking(move |s| s.backup_ssh_key(&host)).await {
        Ok(key) => {
            tracing::info!(public_key = %key.public_key, "the appliance's SSH key for automatic backups")
        }
        Err(e) if keyd_down(&e) => {}
        Err(e) => tracing::error!("making or loading the appliance's SSH key: {e:#}"),
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let runner = tokio::spawn(daemon.clone().run(stop_rx));
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "ready backupd")?;
        out.flush()?;
    }
    appliance::daemon::notify_ready();

    appliance::daemon::shutdown_signal().await;
    tracing::info!("stopping");
    appliance::daemon::notify_stopping();
    stop_tx.send(true).ok();
    runner.await.context("the scheduler task")?;
    tracing::info!("stopped");
    Ok(())
}

fn main() -> std::process::ExitCode {
    appliance::daemon::init_logging();
    let flags = Flags::parse();
    let result = Config::load(flags).and_then(|cfg| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the runtime")?;
        let r = rt.block_on(run(cfg));
        // An abandoned push's thread has had its socket shut down; do not
        // wait for it forever.
        rt.shutdown_timeout(Duration::from_secs(5));
        r
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("custos-backupd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use appliance::store::{Frequency, TimeOfDay};
    use time::macros::datetime;

    fn daily(hour: i64, minute: i64) -> Schedule {
        let time = TimeOfDay::new("time", hour, minute).expect("a time of day");
        Schedule::new(Frequency::Daily, time, None).expect("a daily schedule")
    }

    #[test]
    fn a_schedule_set_just_before_its_minute_runs_today() {
        let s = daily(14, 30);
        let polled = datetime!(2026-12-05 14:29:59.5 UTC);
        let now = datetime!(2026-12-05 14:30:01.5 UTC);
        let at = s.next_after(plan_from(Some(polled), now));
        assert_eq!(at, datetime!(2026-12-05 14:30 UTC));
        assert!(now >= at, "due at once");
    }

    #[test]
    fn a_run_made_this_minute_is_not_repeated_by_a_change() {
        // The 14:30 run was started by the poll at 14:30:00.2; the target
        // changed at 14:30:03.
        let s = daily(14, 30);
        let polled = datetime!(2026-12-05 14:30:00.2 UTC);
        let now = datetime!(2026-12-05 14:30:04 UTC);
        assert_eq!(
            s.next_after(plan_from(Some(polled), now)),
            datetime!(2026-12-06 14:30 UTC)
        );
    }

    #[test]
    fn after_keyd_was_away_a_change_looks_back_only_a_few_seconds() {
        let s = daily(14, 30);
        let polled = datetime!(2026-12-05 14:20 UTC);
        let now = datetime!(2026-12-05 14:35 UTC);
        assert_eq!(plan_from(Some(polled), now), now - CHANGE_LOOKBACK);
        assert_eq!(
            s.next_after(plan_from(Some(polled), now)),
            datetime!(2026-12-06 14:30 UTC)
        );
        assert_eq!(plan_from(None, now), now, "at start: from now");
    }
}
