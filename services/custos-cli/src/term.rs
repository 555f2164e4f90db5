//! The terminal: line editing and history (rustyline) on a terminal, plain
//! line reads when standard input is not one; hidden password entry; output
//! that turns a closed terminal into [`Hangup`] instead of a panic.

use std::io::{BufRead, IsTerminal, Write};
use std::os::fd::AsFd;

use rustix::termios::{self, LocalModes, OptionalActions};
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{Config, Editor};

/// The terminal is gone (closed, hung up): the session ends.
#[derive(Debug, Clone, Copy)]
pub struct Hangup;

impl std::fmt::Display for Hangup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the terminal was closed")
    }
}

impl std::error::Error for Hangup {}

/// What one read produced.
#[derive(Debug)]
pub enum Line {
    Text(String),
    /// Ctrl-C.
    Interrupted,
    /// Ctrl-D on an empty line, or the end of the input.
    Eof,
    /// Bytes that are not UTF-8 text (already consumed).
    NotText,
}

/// Lines longer than this (characters) are refused as a whole.
pub const MAX_LINE: usize = 1024;
const HISTORY: usize = 200;

pub struct Terminal {
    editor: Editor<(), DefaultHistory>,
    tty: bool,
}

impl Terminal {
    pub fn new() -> anyhow::Result<Terminal> {
        let config = Config::builder()
            .auto_add_history(false)
            .max_history_size(HISTORY)?
            .build();
        Ok(Terminal {
            editor: Editor::with_config(config)?,
            tty: std::io::stdin().is_terminal(),
        })
    }

    /// Reads one line with editing; `history` adds it to the history.
    pub fn read_line(&mut self, prompt: &str, history: bool) -> Result<Line, Hangup> {
        if !self.tty {
            // rustyline shows no prompt when it reads from a pipe or file.
            self.write(prompt)?;
        }
        match self.editor.readline(prompt) {
            Ok(line) => {
                if history && !line.trim().is_empty() && line.chars().count() <= MAX_LINE {
                    let _ = self.editor.add_history_entry(line.as_str());
                }
                Ok(Line::Text(line))
            }
            Err(ReadlineError::Interrupted) => Ok(Line::Interrupted),
            Err(ReadlineError::Eof) => Ok(Line::Eof),
            Err(ReadlineError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                Ok(Line::NotText)
            }
            Err(ReadlineError::Signal(_)) => Ok(Line::Interrupted),
            Err(_) => Err(Hangup),
        }
    }

    /// Reads a password without echo (on a terminal).
    pub fn read_secret(&mut self, prompt: &str) -> Result<Line, Hangup> {
        self.write(prompt)?;
        if !self.tty {
            let mut buf = Vec::new();
            return match std::io::stdin().lock().read_until(b'\n', &mut buf) {
                Ok(0) => Ok(Line::Eof),
                Ok(_) => {
                    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                        buf.pop();
                    }
                    Ok(String::from_utf8(buf).map_or(Line::NotText, Line::Text))
                }
                Err(_) => Err(Hangup),
            };
        }
        let line = read_hidden();
        self.say("")?;
        line
    }

    /// Writes `text` and a newline.
    pub fn say(&mut self, text: &str) -> Result<(), Hangup> {
        self.write(text)?;
        self.write("\n")
    }

    fn write(&mut self, text: &str) -> Result<(), Hangup> {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|_| Hangup)
    }
}

/// Restores the terminal's modes when dropped.
struct ModeGuard {
    saved: termios::Termios,
}

impl Drop for ModeGuard {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), OptionalActions::Now, &self.saved);
    }
}

/// Reads one line from the terminal with echo, signals and line editing off,
/// byte by byte (nothing is buffered past the line, so the line editor reads
/// whatever was typed ahead). Backspace and Ctrl-U edit; Ctrl-C interrupts;
/// Ctrl-D on an empty line ends.
fn read_hidden() -> Result<Line, Hangup> {
    let stdin = std::io::stdin();
    let fd = stdin.as_fd();
    let saved = termios::tcgetattr(fd).map_err(|_| Hangup)?;
    let mut raw = saved.clone();
    raw.local_modes
        .remove(LocalModes::ECHO | LocalModes::ICANON | LocalModes::ISIG);
    raw.special_codes[termios::SpecialCodeIndex::VMIN] = 1;
    raw.special_codes[termios::SpecialCodeIndex::VTIME] = 0;
    termios::tcsetattr(fd, OptionalActions::Now, &raw).map_err(|_| Hangup)?;
    let _guard = ModeGuard { saved };
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let mut byte = [0u8; 1];
        match rustix::io::read(fd, &mut byte) {
            Ok(0) => return Ok(Line::Eof),
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return Err(Hangup),
        }
        match byte[0] {
            b'\r' | b'\n' => break,
            0x03 => return Ok(Line::Interrupted),
            0x04 if buf.is_empty() => return Ok(Line::Eof),
            0x7f | 0x08 => {
                // Drop one whole character (UTF-8 continuation bytes first).
                while buf.last().is_some_and(|b| b & 0xC0 == 0x80) {
                    buf.pop();
                }
                buf.pop();
            }
            0x15 => buf.clear(),
            b if b < 0x20 => {}
            b => {
                if buf.len() < MAX_LINE * 4 {
                    buf.push(b);
                }
            }
        }
    }
    Ok(String::from_utf8(buf).map_or(Line::NotText, Line::Text))
}
