//! One CLI session: the first-login steps (licence agreement, forced
//! password change), then the menu loop with its command counter.

use std::sync::atomic::{AtomicBool, Ordering};

use appliance::Store;
use appliance::model::Severity;
use appliance::secret::SecretString;
use appliance::store::{CLI_LOGIN, CliSession};

use crate::host::{Cmd, Host};
use crate::menu::{self, Category, Failure, Found, Pick};
use crate::render::SystemFile;
use crate::term::{Hangup, Line, MAX_LINE, Terminal};

/// Set by SIGINT/SIGQUIT (Ctrl-C, Ctrl-\ while a command runs); cleared
/// before each command.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

const AGREEMENT: &str = include_str!("agreement.txt");
/// New passwords refused in a row before the session ends.
const NEW_PASSWORD_TRIES: usize = 3;

/// The categories of spec §3 that exist so far.
pub const CATEGORIES: &[Category] = &[
    crate::network::CATEGORY,
    crate::maintenance::CATEGORY,
    crate::system::CATEGORY,
    crate::ha::CATEGORY,
];

const TOP: &str = "custos";

/// What a command needs.
pub struct Ctx<'a> {
    pub store: &'a Store,
    pub session: &'a CliSession,
    pub host: &'a Host,
    pub term: &'a mut Terminal,
}

impl Ctx<'_> {
    pub fn say(&mut self, text: &str) -> Result<(), Failure> {
        Ok(self.term.say(text)?)
    }

    /// Prints the warning, asks `Continue? (yes|no) [no]:`; only `yes` goes on.
    pub fn confirm(&mut self, warning: &[&str]) -> Result<(), Failure> {
        for line in warning {
            self.say(&format!("WARNING: {line}"))?;
        }
        match self.term.read_line("Continue? (yes|no) [no]: ", false)? {
            Line::Text(a) if a.trim().eq_ignore_ascii_case("yes") => Ok(()),
            _ => Err(Failure::Cancelled),
        }
    }

    /// Asks for a value; an empty answer takes `default`. Ctrl-C or the end
    /// of input cancels.
    pub fn ask(&mut self, prompt: &str, default: &str) -> Result<String, Failure> {
        let shown = if default.is_empty() {
            format!("{prompt}: ")
        } else {
            format!("{prompt} [{default}]: ")
        };
        match self.term.read_line(&shown, false)? {
            Line::Text(a) if a.chars().count() > MAX_LINE => Err(Failure::Error(anyhow::anyhow!(
                "the answer is too long (at most {MAX_LINE} characters)"
            ))),
            Line::Text(a) if a.trim().is_empty() => Ok(default.to_owned()),
            Line::Text(a) => Ok(a.trim().to_owned()),
            Line::NotText => Err(Failure::Error(anyhow::anyhow!(
                "the answer is not valid UTF-8 text"
            ))),
            Line::Interrupted | Line::Eof => Err(Failure::Cancelled),
        }
    }

    /// Records a change made outside the store.
    pub fn audit(&self, what: &str) -> Result<(), Failure> {
        Ok(self.store.cli_log(self.session, Severity::Info, what)?)
    }

    /// Writes the configuration files, then runs (or records) the commands
    /// that apply them. A failure is audited as an ERROR and reported with
    /// what had already been changed.
    pub fn apply(&mut self, what: &str, files: &[SystemFile], cmds: &[Cmd]) -> Result<(), Failure> {
        let result = (|| -> anyhow::Result<()> {
            for f in files {
                self.host.write_file(f)?;
            }
            for c in cmds {
                self.host.run(c)?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            let msg = format!("applying {what} failed: {e:#}");
            self.store
                .cli_log(self.session, Severity::Error, &msg)
                .map_err(anyhow::Error::from)?;
            return Err(Failure::Error(anyhow::anyhow!(msg)));
        }
        Ok(())
    }
}

/// How a session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// `exit`, `quit`, Ctrl-D or a closed terminal.
    Normal,
    /// Refused: locked, agreement declined, password not changed.
    Refused,
}

pub fn run(store: &Store, host: &Host, term: &mut Terminal, source: &str) -> anyhow::Result<End> {
    match session(store, host, term, source) {
        Ok(end) => Ok(end),
        Err(e) if e.downcast_ref::<Hangup>().is_some() => Ok(End::Normal),
        Err(e) => Err(e),
    }
}

fn session(store: &Store, host: &Host, term: &mut Terminal, source: &str) -> anyhow::Result<End> {
    term.say(&format!(
        "Custos {} admin CLI ({CLI_LOGIN}). Type ? for help.",
        appliance::VERSION
    ))?;
    if !first_login(store, host, term, source)? {
        return Ok(End::Refused);
    }
    let session = match store.cli_session(source) {
        Ok(s) => s,
        Err(e) => {
            term.say(&format!("ERROR: {e}"))?;
            return Ok(End::Refused);
        }
    };
    let mut ctx = Ctx {
        store,
        session: &session,
        host,
        term,
    };
    let end = menu_loop(&mut ctx);
    let _ = store.cli_log(&session, Severity::Info, "signed out of the admin CLI");
    end
}

/// The licence agreement and the forced password change (§2). `false`
/// ends the session.
fn first_login(
    store: &Store,
    host: &Host,
    term: &mut Terminal,
    source: &str,
) -> anyhow::Result<bool> {
    let account = store.cli_account()?;
    if account.locked_until.is_some() {
        term.say(&format!("ERROR: {}", appliance::Error::Locked))?;
        return Ok(false);
    }
    if !account.agreement_accepted {
        for line in AGREEMENT.lines() {
            term.say(line)?;
        }
        term.say("")?;
        let answer = term.read_line("Type Y to accept the licence agreement: ", false)?;
        if !matches!(&answer, Line::Text(a) if a.trim().eq_ignore_ascii_case("y")) {
            term.say("ERROR: the licence agreement was not accepted; the session ends")?;
            return Ok(false);
        }
        store.cli_accept_agreement(source)?;
    }
    if !account.must_change_password {
        return Ok(true);
    }
    term.say(&format!(
        "The password of {CLI_LOGIN} must be changed before first use."
    ))?;
    let proof = loop {
        let Line::Text(current) = term.read_secret("Current password: ")? else {
            term.say("ERROR: the password was not changed; the session ends")?;
            return Ok(false);
        };
        match store.cli_verify_password(&SecretString::new(current), source) {
            Ok(proof) => break proof,
            Err(appliance::Error::BadCredentials) => {
                term.say("ERROR: the password is wrong")?;
            }
            Err(e @ appliance::Error::Locked) => {
                term.say(&format!("ERROR: {e}"))?;
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        }
    };
    for _ in 0..NEW_PASSWORD_TRIES {
        let Line::Text(new) = term.read_secret("New password: ")? else {
            break;
        };
        let new = SecretString::new(new);
        if let Err(e) = store.cli_check_new_password(&new) {
            term.say(&format!("ERROR: {e}"))?;
            continue;
        }
        let Line::Text(again) = term.read_secret("Retype new password: ")? else {
            break;
        };
        let again = SecretString::new(again);
        if !new.ct_eq(again.expose()) {
            term.say("ERROR: the passwords do not match")?;
            continue;
        }
        // The operating system's password first (sshd checks it), then the store.
        let chpasswd = Cmd::new(&["chpasswd"])
            .with_stdin(SecretString::new(format!("{CLI_LOGIN}:{}", new.expose())));
        if let Err(e) = host.run(&chpasswd) {
            term.say(&format!(
                "ERROR: the operating system password could not be set: {e:#}"
            ))?;
            return Ok(false);
        }
        store.cli_set_password(proof, &new, source)?;
        term.say(&format!("SUCCESS: the password of {CLI_LOGIN} was changed"))?;
        return Ok(true);
    }
    term.say("ERROR: the password was not changed; the session ends")?;
    Ok(false)
}

/// Where the operator is: the top menu or a category.
pub type Level = Option<&'static Category>;

enum Flow {
    Stay,
    Enter(&'static Category),
    Up,
    Exit,
}

fn menu_loop(ctx: &mut Ctx<'_>) -> anyhow::Result<End> {
    let mut counter: u32 = 0;
    let mut level: Level = None;
    loop {
        let prompt = format!(
            "{:04}:{}$ ",
            counter % 10_000,
            level.map_or(TOP, |c| c.name)
        );
        let line = match ctx.term.read_line(&prompt, true)? {
            Line::Text(line) => line,
            Line::Interrupted => continue,
            Line::Eof => return Ok(End::Normal),
            Line::NotText => {
                counter += 1;
                ctx.term.say("ERROR: the input is not valid UTF-8 text")?;
                continue;
            }
        };
        let tokens = match split_line(&line) {
            Typed::Blank => continue,
            Typed::TooLong => {
                counter += 1;
                ctx.term.say(&format!(
                    "ERROR: the line is too long (at most {MAX_LINE} characters)"
                ))?;
                continue;
            }
            Typed::Words(tokens) => tokens,
        };
        counter += 1;
        INTERRUPTED.store(false, Ordering::Relaxed);
        match dispatch(ctx, level, &tokens) {
            Ok(Flow::Stay) => {}
            Ok(Flow::Enter(c)) => level = Some(c),
            Ok(Flow::Up) => level = None,
            Ok(Flow::Exit) => return Ok(End::Normal),
            Err(Hangup) => return Ok(End::Normal),
        }
    }
}

const NAVIGATION: [&str; 3] = ["up", "exit", "quit"];

/// A line as typed: the words of the menu, or why there are none.
#[derive(Debug, PartialEq, Eq)]
pub enum Typed<'l> {
    /// Only blanks: not counted, not answered.
    Blank,
    /// Over [`MAX_LINE`] characters: refused.
    TooLong,
    Words(Vec<&'l str>),
}

/// Splits a typed line into its words (blanks separate them).
pub fn split_line(line: &str) -> Typed<'_> {
    if line.chars().count() > MAX_LINE {
        return Typed::TooLong;
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    if words.is_empty() {
        Typed::Blank
    } else {
        Typed::Words(words)
    }
}

/// What the words of a line ask for at a level, before anything runs;
/// a command's own words and arguments are then matched by
/// [`menu::find`] and [`menu::parse_args`].
#[derive(Debug)]
pub enum Request<'t> {
    /// `?` ended the line: help for a level and the words before the `?`.
    Help(Level, &'t [&'t str]),
    /// The first word names nothing here.
    Unknown(&'t str),
    /// The first word is the start of several.
    Ambiguous(&'t str, Vec<&'static str>),
    Exit,
    /// `up` in the top menu.
    AtTop,
    Up,
    Enter(&'static Category),
    /// A command of a category: its words and arguments.
    Run(&'static Category, &'t [&'t str]),
    /// Nothing to do (a picked category that is not in the list).
    Nothing,
}

/// Resolves the words of a line at `level`.
pub fn resolve<'t>(level: Level, tokens: &'t [&'t str]) -> Request<'t> {
    let (help, tokens) = match tokens.split_last() {
        Some((&"?", rest)) => (true, rest),
        _ => (false, tokens),
    };
    let Some(first) = tokens.first() else {
        return Request::Help(level, &[]);
    };
    let mut options: Vec<&str> = match level {
        None => CATEGORIES.iter().map(|c| c.name).collect(),
        Some(cat) => {
            let mut v: Vec<&str> = vec![];
            for c in cat.commands {
                if !v.contains(&c.words[0]) {
                    v.push(c.words[0]);
                }
            }
            v
        }
    };
    options.extend(NAVIGATION);
    let word = match menu::pick(first, &options) {
        Pick::One(w) => w,
        Pick::Unknown => return Request::Unknown(first),
        Pick::Ambiguous(options) => return Request::Ambiguous(first, options),
    };
    match (word, level) {
        ("exit" | "quit", _) => return Request::Exit,
        ("up", None) => return Request::AtTop,
        ("up", Some(_)) => return Request::Up,
        _ => {}
    }
    match level {
        None => {
            let Some(cat) = CATEGORIES.iter().find(|c| c.name == word) else {
                return Request::Nothing;
            };
            if help {
                Request::Help(Some(cat), &tokens[1..])
            } else if tokens.len() == 1 {
                Request::Enter(cat)
            } else {
                Request::Run(cat, &tokens[1..])
            }
        }
        Some(cat) => {
            if help {
                Request::Help(level, tokens)
            } else {
                Request::Run(cat, tokens)
            }
        }
    }
}

fn dispatch(ctx: &mut Ctx<'_>, level: Level, tokens: &[&str]) -> Result<Flow, Hangup> {
    match resolve(level, tokens) {
        Request::Help(at, words) => help_for(ctx, at, words)?,
        Request::Unknown(first) => {
            let place = level.map_or(String::new(), |c| format!(" in {}", c.name));
            ctx.term.say(&format!(
                "ERROR: unknown command '{}'{place}; type ? for the list",
                appliance::os::shown(first)
            ))?;
        }
        Request::Ambiguous(first, options) => {
            ctx.term.say(&format!(
                "ERROR: '{}' is ambiguous: {}",
                appliance::os::shown(first),
                options.join(", ")
            ))?;
        }
        Request::Exit => return Ok(Flow::Exit),
        Request::AtTop => ctx.term.say("ERROR: already at the top menu")?,
        Request::Up => return Ok(Flow::Up),
        Request::Enter(cat) => return Ok(Flow::Enter(cat)),
        Request::Run(cat, words) => run_command(ctx, cat, words)?,
        Request::Nothing => {}
    }
    Ok(Flow::Stay)
}

fn help_for(ctx: &mut Ctx<'_>, level: Level, words: &[&str]) -> Result<(), Hangup> {
    let Some(cat) = level else {
        let width = CATEGORIES
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(0)
            .max(11);
        ctx.term.say("Categories:")?;
        for c in CATEGORIES {
            ctx.term.say(&format!("  {:<width$}  {}", c.name, c.help))?;
        }
        ctx.term
            .say(&format!("  {:<width$}  End the session", "exit | quit"))?;
        return Ok(());
    };
    let found = if words.is_empty() {
        Found::Incomplete(cat.commands.iter().collect())
    } else {
        menu::find(cat.commands, words)
    };
    let commands: Vec<&menu::Command> = match found {
        Found::Command(c, _) => vec![c],
        Found::Incomplete(cs) => cs,
        Found::Unknown(w) | Found::Ambiguous(w, _) => {
            ctx.term.say(&format!(
                "ERROR: no command of {} starts with '{}'",
                cat.name,
                appliance::os::shown(&w)
            ))?;
            return Ok(());
        }
    };
    ctx.term.say(&format!("Commands of {}:", cat.name))?;
    for line in menu::help_lines(&commands) {
        ctx.term.say(&line)?;
    }
    if words.is_empty() {
        ctx.term.say("  up           Back to the top menu")?;
        ctx.term.say("  exit | quit  End the session")?;
    }
    Ok(())
}

fn run_command(ctx: &mut Ctx<'_>, cat: &Category, tokens: &[&str]) -> Result<(), Hangup> {
    let (cmd, rest) = match menu::find(cat.commands, tokens) {
        Found::Command(c, rest) => (c, rest),
        Found::Incomplete(cs) => {
            for c in &cs {
                ctx.term.say(&c.usage())?;
            }
            return ctx.term.say(&format!(
                "ERROR: incomplete command '{}'; type ? for the commands",
                tokens.join(" ")
            ));
        }
        Found::Unknown(w) => {
            return ctx.term.say(&format!(
                "ERROR: unknown command '{}' in {}; type ? for the list",
                appliance::os::shown(&w),
                cat.name
            ));
        }
        Found::Ambiguous(w, options) => {
            return ctx.term.say(&format!(
                "ERROR: '{}' is ambiguous: {}",
                appliance::os::shown(&w),
                options.join(", ")
            ));
        }
    };
    let outcome = menu::parse_args(cmd.args, rest).and_then(|args| (cmd.run)(ctx, &args));
    let last = match outcome {
        Ok(msg) => format!("SUCCESS: {msg}"),
        Err(Failure::Usage(why)) => {
            ctx.term.say(&cmd.usage())?;
            if !cmd.example.is_empty() {
                ctx.term.say(&format!("example: {}", cmd.example))?;
            }
            format!("ERROR: {why}")
        }
        Err(Failure::Cancelled) => "ERROR: cancelled; nothing was changed".to_owned(),
        Err(Failure::Hangup) => return Err(Hangup),
        Err(Failure::Error(e)) => format!("ERROR: {}", one_line(&format!("{e:#}"))),
    };
    ctx.term.say(&last)
}

/// Errors end in one line.
fn one_line(s: &str) -> String {
    s.lines().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<&str> {
        match split_line(line) {
            Typed::Words(w) => w,
            other => panic!("{line:?}: {other:?}"),
        }
    }

    #[test]
    fn lines_resolve_as_the_menu_reads_them() {
        assert_eq!(split_line("  \t "), Typed::Blank);
        assert_eq!(split_line(&"x".repeat(MAX_LINE + 1)), Typed::TooLong);
        let w = words("net ip route show");
        assert!(
            matches!(resolve(None, &w), Request::Run(c, rest) if c.name == "network" && rest.len() == 3)
        );
        let w = words("net");
        assert!(matches!(resolve(None, &w), Request::Enter(c) if c.name == "network"));
        let w = words("up");
        assert!(matches!(resolve(None, &w), Request::AtTop));
        assert!(matches!(resolve(Some(&CATEGORIES[0]), &w), Request::Up));
        let w = words("net ?");
        assert!(
            matches!(resolve(None, &w), Request::Help(Some(c), rest) if c.name == "network" && rest.is_empty())
        );
        let w = words("?");
        assert!(matches!(resolve(None, &w), Request::Help(None, [])));
        let w = words("nonsense 1");
        assert!(matches!(resolve(None, &w), Request::Unknown("nonsense")));
        let w = words("QUIT");
        assert!(matches!(resolve(Some(&CATEGORIES[1]), &w), Request::Exit));
    }
}
