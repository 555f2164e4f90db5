//! What every appliance daemon does the same way at its edges (STYLE:
//! "one shared init"): logging to stderr for journald, telling systemd it
//! is ready or stopping, and waiting for SIGTERM (or Ctrl-C in a local
//! run). Behind the `daemon` feature, so the CLI and the tools that use the
//! store do not pull in tokio's signal handling.

/// `tracing` to stderr (journald in the image), colours only on a
/// terminal, level from `RUST_LOG` (default `info`).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
}

/// Tells systemd the unit is ready (`Type=notify`); a no-op elsewhere.
pub fn notify_ready() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
}

/// Tells systemd the unit is stopping.
pub fn notify_stopping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}

/// Resolves on SIGTERM (systemd's stop) or Ctrl-C (a local run).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
