//! The registration shared secret: read from a file, from standard input, or
//! asked for on the terminal without echo; never from the command line or the
//! environment, which other users and child processes can read.

use std::fmt;
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use rustix::termios::{self, LocalModes, OptionalActions};
use zeroize::Zeroizing;

/// The longest secret read; a secret is far shorter, and this bounds what a
/// wrong path (a log file, a device) can make the agent hold in memory.
const MAX_SECRET_BYTES: u64 = 4096;

/// The shared secret: redacted in `Debug`, zeroized on drop.
pub struct SharedSecret(Zeroizing<String>);

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedSecret(<redacted>)")
    }
}

impl SharedSecret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Reads the secret from `source` (`-`: standard input), or, without one,
/// asks for it on the terminal.
pub fn read(source: Option<&Path>, domain: &str) -> Result<SharedSecret> {
    let (text, from) = match source {
        Some(path) if path.as_os_str() == "-" => (
            read_limited(io::stdin().lock())?,
            "standard input".to_owned(),
        ),
        Some(path) => {
            let file = std::fs::File::open(path)
                .with_context(|| format!("--secret-file: reading {}", path.display()))?;
            (
                read_limited(file)
                    .with_context(|| format!("--secret-file: reading {}", path.display()))?,
                path.display().to_string(),
            )
        }
        None if io::stdin().is_terminal() => (prompt(domain)?, "the terminal".to_owned()),
        None => bail!(
            "no shared secret: pass --secret-file PATH (a file only you can read), \
             or --secret-file - to read it from standard input"
        ),
    };
    parse(text, &from)
}

/// The secret in `text`: one line, its line ending removed.
fn parse(mut text: Zeroizing<String>, from: &str) -> Result<SharedSecret> {
    for ending in ["\r\n", "\n"] {
        if text.ends_with(ending) {
            let len = text.len() - ending.len();
            text.truncate(len);
            break;
        }
    }
    if text.is_empty() {
        bail!("the shared secret read from {from} is empty");
    }
    if text.contains(['\n', '\r']) {
        bail!("the shared secret read from {from} has more than one line");
    }
    Ok(SharedSecret(text))
}

fn read_limited(reader: impl Read) -> Result<Zeroizing<String>> {
    let mut bytes = Zeroizing::new(Vec::new());
    reader
        .take(MAX_SECRET_BYTES + 1)
        .read_to_end(&mut bytes)
        .context("reading the shared secret")?;
    if bytes.len() as u64 > MAX_SECRET_BYTES {
        bail!("the shared secret is longer than {MAX_SECRET_BYTES} bytes: is this the right file?");
    }
    let text = std::str::from_utf8(&bytes).context("the shared secret is not UTF-8 text")?;
    Ok(Zeroizing::new(text.to_owned()))
}

/// Asks on the terminal with echo off, restoring the terminal afterwards.
fn prompt(domain: &str) -> Result<Zeroizing<String>> {
    let stdin = io::stdin();
    let saved = termios::tcgetattr(&stdin).context("reading the terminal settings")?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    quiet.local_modes.insert(LocalModes::ECHONL);
    eprint!("Shared secret of domain {domain}: ");
    io::stderr().flush().context("writing the prompt")?;
    termios::tcsetattr(&stdin, OptionalActions::Flush, &quiet)
        .context("turning the terminal echo off")?;
    let mut line = Zeroizing::new(String::new());
    let read = stdin.lock().read_line(&mut line);
    let restored = termios::tcsetattr(&stdin, OptionalActions::Flush, &saved);
    read.context("reading the shared secret from the terminal")?;
    restored.context("restoring the terminal settings")?;
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Zeroizing<String> {
        Zeroizing::new(s.to_owned())
    }

    #[test]
    fn one_line_ending_is_removed() {
        assert_eq!(
            parse(text("Secret!1\n"), "f").expect("ok").expose(),
            "Secret!1"
        );
        assert_eq!(
            parse(text("Secret!1\r\n"), "f").expect("ok").expose(),
            "Secret!1"
        );
        assert_eq!(
            parse(text(" Secret!1 "), "f").expect("ok").expose(),
            " Secret!1 "
        );
    }

    #[test]
    fn empty_and_multi_line_secrets_are_refused() {
        for (input, error) in [
            ("", "the shared secret read from f is empty"),
            ("\n", "the shared secret read from f is empty"),
            (
                "a\nb\n",
                "the shared secret read from f has more than one line",
            ),
        ] {
            assert_eq!(parse(text(input), "f").expect_err(input).to_string(), error);
        }
    }

    #[test]
    fn a_file_too_long_is_refused() {
        let long = vec![b'a'; 5000];
        assert!(read_limited(long.as_slice()).is_err());
        assert_eq!(*read_limited(&b"abc"[..]).expect("short"), "abc");
    }

    #[test]
    fn debug_is_redacted() {
        let s = parse(text("Hunter2!x"), "f").expect("ok");
        assert!(!format!("{s:?}").contains("Hunter2"));
    }
}
