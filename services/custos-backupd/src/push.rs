//! One push attempt, blocking (run on a blocking thread): write the
//! encrypted backup, streamed by custos-keyd, to a private temporary file in
//! the spool directory,
//! connect, check the target's host key against the pinned one *before*
//! authenticating, authenticate with the appliance's key, copy the file
//! with SCP, and remove the temporary file whatever happened.

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use appliance::local::{Client, ErrorKind, WireError};
use appliance::store::{BackupSshKey, HostKeyCheck, ScpTarget, ssh_fingerprint_of_sha256};
use ssh2::{HashType, Session};

/// Temporary files of this daemon start with this, in the spool directory.
const TMP_PREFIX: &str = "backupd-";

/// Why an attempt failed: `retry` says whether another attempt may help
/// (the network, the target's sshd) or not (a changed host key, no wrapper
/// key, the settings removed meanwhile, the daemon stopping).
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub retry: bool,
}

impl Failure {
    fn retry(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            retry: true,
        }
    }
    fn fatal(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            retry: false,
        }
    }
}

/// What a successful attempt pushed.
#[derive(Debug)]
pub struct Pushed {
    pub file_name: String,
    pub bytes: u64,
}

/// Lets the daemon abandon an attempt in progress when it stops: the flag
/// is checked between steps and the socket is shut down, which makes a
/// blocked libssh2 call return at once.
#[derive(Debug, Default)]
pub struct Abort {
    stopped: AtomicBool,
    socket: Mutex<Option<TcpStream>>,
}

impl Abort {
    pub fn abort(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        if let Some(s) = self.socket.lock().expect("abort mutex poisoned").take() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    fn check(&self) -> Result<(), Failure> {
        if self.stopped() {
            return Err(Failure::fatal(
                "custos-backupd stopped during the push; it was abandoned",
            ));
        }
        Ok(())
    }

    fn watch(&self, s: &TcpStream) {
        *self.socket.lock().expect("abort mutex poisoned") = s.try_clone().ok();
        if self.stopped() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// A file in the spool directory (mode 0600) removed when dropped.
struct TempFile {
    path: PathBuf,
}

impl TempFile {
    fn create(tmp_dir: &Path) -> std::io::Result<(TempFile, fs::File)> {
        let name = format!(
            "{TMP_PREFIX}{}.tar",
            hex_token(&appliance::crypto::random_secret(8))
        );
        let path = tmp_dir.join(name);
        let file = fs::OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        Ok((TempFile { path }, file))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_file(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::error!(path = %self.path.display(), error = %e, "cannot remove the temporary backup file");
        }
    }
}

fn hex_token(b: &appliance::secret::SecretBytes) -> String {
    b.expose().iter().map(|x| format!("{x:02x}")).collect()
}

/// The spool directory, created 0700 when missing.
pub fn tmp_dir(spool: &Path) -> std::io::Result<PathBuf> {
    let dir = spool.to_path_buf();
    match fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    Ok(dir)
}

/// Removes temporary files a crash or power cut left behind.
pub fn remove_stale(tmp_dir: &Path) {
    let Ok(entries) = fs::read_dir(tmp_dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
            match fs::remove_file(e.path()) {
                Ok(()) => {
                    tracing::info!(path = %e.path().display(), "removed a stale temporary backup file")
                }
                Err(err) => {
                    tracing::warn!(path = %e.path().display(), error = %err, "cannot remove a stale temporary backup file")
                }
            }
        }
    }
}

/// What one attempt needs.
pub struct Attempt<'a> {
    pub store: &'a Client,
    pub target: &'a ScpTarget,
    pub host_name: &'a str,
    pub tmp_dir: &'a Path,
    pub timeout: Duration,
    pub abort: &'a Abort,
}

impl Attempt<'_> {
    /// Writes the backup and pushes it. On failure, the file name and size
    /// are returned too when the backup had been written.
    pub fn run(&self) -> Result<Pushed, (Failure, Option<Pushed>)> {
        self.attempt().map_err(|(f, made)| {
            // Whatever broke after the daemon gave up on the push is its
            // consequence (a shut-down socket), not the cause.
            if self.abort.stopped() && f.retry {
                (
                    Failure::fatal(format!(
                        "custos-backupd stopped during the push; it was abandoned ({})",
                        f.message
                    )),
                    made,
                )
            } else {
                (f, made)
            }
        })
    }

    fn attempt(&self) -> Result<Pushed, (Failure, Option<Pushed>)> {
        self.abort.check().map_err(|f| (f, None))?;
        let key = self.store.backup_ssh_key(self.host_name).map_err(|e| {
            (
                Failure::fatal(format!("the appliance's SSH key: {e}")),
                None,
            )
        })?;
        let (tmp, mut file) = TempFile::create(self.tmp_dir).map_err(|e| {
            (
                Failure::retry(format!(
                    "cannot create a temporary file in {}: {e}",
                    self.tmp_dir.display()
                )),
                None,
            )
        })?;
        let info = match self.store.write_backup(self.host_name, &mut file) {
            Ok(info) => info,
            Err(appliance::local::Error::Store(WireError {
                kind: ErrorKind::Conflict,
                field,
                message,
            })) if field == "wrapper_key" => {
                return Err((
                    Failure::fatal(format!("no backup was made: {message}")),
                    None,
                ));
            }
            Err(
                e @ appliance::local::Error::Store(WireError {
                    kind: ErrorKind::Invalid | ErrorKind::Conflict,
                    ..
                }),
            ) => {
                return Err((Failure::fatal(format!("no backup was made: {e}")), None));
            }
            Err(e) => {
                tracing::error!(error = %e, "writing the backup failed");
                return Err((
                    Failure::retry(format!("writing the backup failed: {e}")),
                    None,
                ));
            }
        };
        let made = || Pushed {
            file_name: info.file_name.clone(),
            bytes: info.bytes,
        };
        let io_fail = |what: &str, e: std::io::Error| {
            (
                Failure::retry(format!("{what} {}: {e}", tmp.path.display())),
                Some(made()),
            )
        };
        file.flush().map_err(|e| io_fail("writing", e))?;
        let size = file.metadata().map_err(|e| io_fail("reading", e))?.len();
        if size != info.bytes {
            return Err((
                Failure::retry(format!(
                    "the backup file has {size} bytes, {} were written",
                    info.bytes
                )),
                Some(made()),
            ));
        }
        drop(file);
        let source = fs::File::open(&tmp.path).map_err(|e| io_fail("opening", e))?;
        self.push(&key, source, &info.file_name, size)
            .map_err(|f| (f, Some(made())))?;
        drop(tmp);
        Ok(made())
    }

    fn connect(&self) -> Result<TcpStream, Failure> {
        let t = self.target;
        let addrs: Vec<_> = (t.host.as_str(), t.port)
            .to_socket_addrs()
            .map_err(|e| Failure::retry(format!("cannot resolve {}: {e}", t.host)))?
            .collect();
        let mut last = None;
        for addr in &addrs {
            self.abort.check()?;
            match TcpStream::connect_timeout(addr, self.timeout) {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(format!("cannot connect to {addr}: {e}")),
            }
        }
        Err(Failure::retry(last.unwrap_or_else(|| {
            format!("{} resolves to no address", t.host)
        })))
    }

    fn push(
        &self,
        key: &BackupSshKey,
        mut source: fs::File,
        file_name: &str,
        size: u64,
    ) -> Result<(), Failure> {
        let t = self.target;
        let tcp = self.connect()?;
        self.abort.watch(&tcp);
        tcp.set_read_timeout(Some(self.timeout)).ok();
        tcp.set_write_timeout(Some(self.timeout)).ok();
        let ssh = |what: &str| {
            let what = what.to_owned();
            move |e: ssh2::Error| Failure::retry(format!("{what}: {}", e.message()))
        };
        let mut sess = Session::new().map_err(ssh("starting an SSH session"))?;
        sess.set_tcp_stream(tcp);
        sess.set_timeout(u32::try_from(self.timeout.as_millis()).unwrap_or(u32::MAX));
        sess.handshake()
            .map_err(ssh(&format!("SSH handshake with {}:{}", t.host, t.port)))?;
        self.abort.check()?;

        // The host key, before anything of ours is sent.
        let digest = sess
            .host_key_hash(HashType::Sha256)
            .ok_or_else(|| Failure::retry("the target presented no host key"))?;
        let presented = ssh_fingerprint_of_sha256(digest);
        let check = self
            .store
            .check_backup_host_key(t, &presented)
            .map_err(|e| Failure::retry(format!("checking the pinned host key: {e}")))?;
        match check {
            HostKeyCheck::Learned => {
                tracing::info!(target = %t, fingerprint = %presented, "learned and pinned the target's host key")
            }
            HostKeyCheck::Matches => {}
            HostKeyCheck::Changed { pinned } => {
                let _ = sess.disconnect(None, "host key changed", None);
                return Err(Failure::fatal(format!(
                    "the target's host key changed: pinned {pinned}, presented {presented}; nothing was sent. \
                     If the change is expected, forget the pinned host key and push again"
                )));
            }
            HostKeyCheck::TargetChanged => {
                let _ = sess.disconnect(None, "settings changed", None);
                return Err(Failure::fatal(
                    "the target was changed or removed during the push; it was abandoned",
                ));
            }
        }

        sess.userauth_pubkey_memory(&t.user, None, key.private_key_pem.expose(), None)
            .map_err(|e| {
                Failure::retry(format!(
                    "the target refused the appliance's SSH key for {} ({}); add the appliance's public key to ~{}/.ssh/authorized_keys on the target",
                    t.user,
                    e.message(),
                    t.user
                ))
            })?;
        if !sess.authenticated() {
            return Err(Failure::retry(format!(
                "the target did not authenticate {}",
                t.user
            )));
        }
        self.abort.check()?;

        let remote = t.remote_path(file_name);
        let mut channel = sess
            .scp_send(Path::new(&remote), 0o600, size, None)
            .map_err(|e| {
                Failure::retry(format!(
                    "the target refused {remote} ({}); does the directory exist, and may {} write to it? Is scp installed there?",
                    e.message(),
                    t.user
                ))
            })?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut sent = 0u64;
        loop {
            self.abort.check()?;
            let n = source
                .read(&mut buf)
                .map_err(|e| Failure::retry(format!("reading the backup file: {e}")))?;
            if n == 0 {
                break;
            }
            channel
                .write_all(&buf[..n])
                .map_err(|e| Failure::retry(format!("sending {remote}: {e}")))?;
            sent += n as u64;
        }
        if sent != size {
            return Err(Failure::retry(format!(
                "the backup file changed while it was sent ({sent} of {size} bytes)"
            )));
        }
        // The SCP protocol ends a file with one zero byte.
        channel
            .write_all(&[0])
            .map_err(|e| Failure::retry(format!("sending {remote}: {e}")))?;
        let finish =
            |e: ssh2::Error| Failure::retry(format!("finishing {remote}: {}", e.message()));
        channel.send_eof().map_err(finish)?;
        channel.wait_eof().map_err(finish)?;
        channel.close().map_err(finish)?;
        channel.wait_close().map_err(finish)?;
        let status = channel.exit_status().map_err(finish)?;
        if status != 0 {
            return Err(Failure::retry(format!(
                "scp on the target exited with status {status} writing {remote}"
            )));
        }
        let _ = sess.disconnect(None, "backup pushed", None);
        Ok(())
    }
}
