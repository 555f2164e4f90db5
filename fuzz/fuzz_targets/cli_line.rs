//! Any bytes as a line typed at the admin CLI (cliadmin over SSH or on the
//! console, §3), at the top menu and in every category: splitting it into
//! words, resolving them (`session::resolve`), finding the command
//! (`menu::find`) and matching its arguments (`menu::parse_args`) — the
//! path the shell takes before a command runs — never panics. Nothing is
//! run: the commands change the system.
//!
//! Lines that are not UTF-8 are refused by the terminal before the parser
//! sees them.

#![no_main]

use custos_cli::menu::{self, Found};
use custos_cli::session::{self, CATEGORIES, Request, Typed};
use custos_cli::term::MAX_LINE;
use libfuzzer_sys::fuzz_target;

fn command_of(commands: &'static [menu::Command], words: &[&str]) {
    if let Found::Command(cmd, rest) = menu::find(commands, words) {
        assert!(rest.len() <= words.len());
        let _ = menu::parse_args(cmd.args, rest);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    let words = match session::split_line(line) {
        Typed::Words(words) => words,
        Typed::TooLong => {
            assert!(line.chars().count() > MAX_LINE);
            return;
        }
        Typed::Blank => {
            assert!(line.trim().is_empty());
            return;
        }
    };
    assert!(
        words
            .iter()
            .all(|w| !w.is_empty() && !w.contains(char::is_whitespace))
    );
    let levels = std::iter::once(None).chain(CATEGORIES.iter().map(Some));
    for level in levels {
        match session::resolve(level, &words) {
            Request::Run(cat, rest) => {
                assert!(rest.len() < words.len() || level.is_some());
                command_of(cat.commands, rest);
            }
            Request::Help(Some(cat), rest) if !rest.is_empty() => command_of(cat.commands, rest),
            _ => {}
        }
    }
});
