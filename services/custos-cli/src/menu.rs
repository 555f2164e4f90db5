//! The command tree of spec §3 and how a typed line finds its command:
//! every keyword may be typed as a unique prefix, arguments are matched
//! against the command's syntax, and a command without its arguments gets
//! its usage and an example.

use appliance::os::MANAGEMENT_INTERFACE;

use crate::session::Ctx;
use crate::term::Hangup;

/// How a command ended, short of success.
#[derive(Debug)]
pub enum Failure {
    /// Missing or wrong arguments: usage and example are printed first.
    Usage(String),
    /// The operator did not answer `yes`.
    Cancelled,
    /// The terminal is gone.
    Hangup,
    /// Refused or failed; the message names the problem.
    Error(anyhow::Error),
}

impl From<Hangup> for Failure {
    fn from(_: Hangup) -> Self {
        Failure::Hangup
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Error(e)
    }
}

impl From<appliance::Error> for Failure {
    fn from(e: appliance::Error) -> Self {
        Failure::Error(e.into())
    }
}

/// A success message, or why not.
pub type Outcome = Result<String, Failure>;
pub type Handler = fn(&mut Ctx<'_>, &Args) -> Outcome;

/// One command: its keywords, its argument syntax (UPPER = a value,
/// lower = a keyword, `a|b` = one of, `[…]` = optional), an example and a
/// line of help.
#[derive(Debug)]
pub struct Command {
    pub words: &'static [&'static str],
    pub args: &'static str,
    pub example: &'static str,
    pub help: &'static str,
    pub run: Handler,
}

impl Command {
    pub fn syntax(&self) -> String {
        let mut s = self.words.join(" ");
        if !self.args.is_empty() {
            s.push(' ');
            s.push_str(self.args);
        }
        s
    }
    pub fn usage(&self) -> String {
        format!("usage: {}", self.syntax())
    }
}

#[derive(Debug)]
pub struct Category {
    pub name: &'static str,
    pub help: &'static str,
    pub commands: &'static [Command],
}

/// The values of a command's arguments, in the order of its syntax
/// (`None` for an optional one not given).
#[derive(Debug, Default)]
pub struct Args {
    values: Vec<Option<String>>,
}

impl Args {
    pub fn get(&self, i: usize) -> Option<&str> {
        self.values.get(i).and_then(|v| v.as_deref())
    }
    /// A required value (the syntax guarantees it; empty otherwise).
    pub fn value(&self, i: usize) -> &str {
        self.get(i).unwrap_or_default()
    }
}

/// A token that picks one of several keywords.
#[derive(Debug, PartialEq, Eq)]
pub enum Pick<'a> {
    One(&'a str),
    Unknown,
    Ambiguous(Vec<&'a str>),
}

/// An exact keyword wins; otherwise a unique prefix (case-insensitive).
pub fn pick<'a>(token: &str, options: &[&'a str]) -> Pick<'a> {
    let token = token.to_ascii_lowercase();
    if let Some(exact) = options.iter().find(|o| **o == token) {
        return Pick::One(exact);
    }
    let mut matches: Vec<&'a str> = options
        .iter()
        .copied()
        .filter(|o| o.starts_with(&token))
        .collect();
    matches.dedup();
    match matches.len() {
        0 => Pick::Unknown,
        1 => Pick::One(matches[0]),
        _ => Pick::Ambiguous(matches),
    }
}

/// What a line names inside a category.
#[derive(Debug)]
pub enum Found<'c, 't> {
    Command(&'c Command, &'t [&'t str]),
    /// The keywords typed are the start of several commands (or one that
    /// needs more keywords).
    Incomplete(Vec<&'c Command>),
    Unknown(String),
    Ambiguous(String, Vec<&'static str>),
}

/// Finds the command `tokens` names; the rest of the tokens are its arguments.
pub fn find<'c, 't>(commands: &'c [Command], tokens: &'t [&'t str]) -> Found<'c, 't> {
    let mut cands: Vec<&'c Command> = commands.iter().collect();
    let mut i = 0;
    loop {
        let complete: Vec<&'c Command> = cands
            .iter()
            .copied()
            .filter(|c| c.words.len() == i)
            .collect();
        let longer: Vec<&'c Command> = cands
            .iter()
            .copied()
            .filter(|c| c.words.len() > i)
            .collect();
        if longer.is_empty() {
            return match complete.first() {
                Some(c) => Found::Command(c, &tokens[i..]),
                None => Found::Unknown(tokens.join(" ")),
            };
        }
        let Some(token) = tokens.get(i) else {
            return match complete.as_slice() {
                [c] => Found::Command(c, &tokens[i..]),
                _ => Found::Incomplete(cands),
            };
        };
        let mut next: Vec<&'static str> = vec![];
        for c in &longer {
            if !next.contains(&c.words[i]) {
                next.push(c.words[i]);
            }
        }
        match pick(token, &next) {
            Pick::One(word) => {
                cands = longer.into_iter().filter(|c| c.words[i] == word).collect();
                i += 1;
            }
            Pick::Ambiguous(options) => {
                return Found::Ambiguous(tokens[..=i].join(" "), options);
            }
            Pick::Unknown => {
                return match complete.first() {
                    Some(c) => Found::Command(c, &tokens[i..]),
                    None => Found::Unknown(tokens[..=i].join(" ")),
                };
            }
        }
    }
}

enum Part<'a> {
    Keyword(&'a str),
    Value,
    OneOf(&'a str),
}

fn part(t: &str) -> Part<'_> {
    if t.chars().any(|c| c.is_ascii_uppercase()) {
        Part::Value
    } else if t.contains('|') {
        Part::OneOf(t)
    } else {
        Part::Keyword(t)
    }
}

/// Matches `args` against a syntax; keywords produce no value except when
/// optional (then the keyword itself, or `None`).
pub fn parse_args(syntax: &str, args: &[&str]) -> Result<Args, Failure> {
    let mut values = vec![];
    let mut j = 0;
    for t in syntax.split_whitespace() {
        let (optional, t) = match t.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            Some(inner) => (true, inner),
            None => (false, t),
        };
        let Some(arg) = args.get(j).copied() else {
            if optional {
                values.push(None);
                continue;
            }
            return Err(Failure::Usage(format!("missing {t}")));
        };
        match part(t) {
            Part::Keyword(k) => {
                if !arg.eq_ignore_ascii_case(k) {
                    if k == MANAGEMENT_INTERFACE {
                        return Err(Failure::Error(interface_error(arg)));
                    }
                    return Err(Failure::Usage(format!(
                        "expected '{k}' instead of '{}'",
                        appliance::os::shown(arg)
                    )));
                }
                if optional {
                    values.push(Some(k.to_owned()));
                }
            }
            Part::Value => values.push(Some(arg.to_owned())),
            Part::OneOf(alternatives) => {
                let Some(a) = alternatives
                    .split('|')
                    .find(|a| a.eq_ignore_ascii_case(arg))
                else {
                    return Err(Failure::Usage(format!(
                        "expected {} instead of '{}'",
                        alternatives.replace('|', " or "),
                        appliance::os::shown(arg)
                    )));
                };
                values.push(Some(a.to_owned()));
            }
        }
        j += 1;
    }
    if let Some(extra) = args.get(j) {
        let hint = if j > 0 {
            " (a value cannot contain spaces)"
        } else {
            ""
        };
        return Err(Failure::Usage(format!(
            "unexpected '{}'{hint}",
            appliance::os::shown(extra)
        )));
    }
    Ok(Args { values })
}

fn interface_error(name: &str) -> anyhow::Error {
    if name == "eth1" {
        anyhow::anyhow!(
            "dev: eth1 is the backup network and is never changed by the CLI; only eth0 can be configured"
        )
    } else {
        anyhow::anyhow!(
            "dev: unknown interface '{}'; only eth0 can be configured",
            appliance::os::shown(name)
        )
    }
}

/// Help lines for commands: syntax and help in two columns.
pub fn help_lines(commands: &[&Command]) -> Vec<String> {
    let width = commands
        .iter()
        .map(|c| c.syntax().len())
        .max()
        .unwrap_or(0)
        .max(12);
    commands
        .iter()
        .map(|c| format!("  {:<width$}  {}", c.syntax(), c.help))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nothing(_: &mut Ctx<'_>, _: &Args) -> Outcome {
        Ok(String::new())
    }

    const CMDS: &[Command] = &[
        Command {
            words: &["ip", "address", "init"],
            args: "ADDRESS/PREFIX dev eth0",
            example: "",
            help: "",
            run: nothing,
        },
        Command {
            words: &["ip", "address", "show"],
            args: "",
            example: "",
            help: "",
            run: nothing,
        },
        Command {
            words: &["ip", "route", "show"],
            args: "",
            example: "",
            help: "",
            run: nothing,
        },
        Command {
            words: &["date"],
            args: "[MM/DD/YYYY]",
            example: "",
            help: "",
            run: nothing,
        },
        Command {
            words: &["dns", "show"],
            args: "",
            example: "",
            help: "",
            run: nothing,
        },
    ];

    fn words(f: Found<'_, '_>) -> String {
        match f {
            Found::Command(c, rest) => format!("{} | {}", c.words.join(" "), rest.join(" ")),
            Found::Incomplete(cs) => format!(
                "incomplete: {}",
                cs.iter().map(|c| c.syntax()).collect::<Vec<_>>().join(", ")
            ),
            Found::Unknown(w) => format!("unknown: {w}"),
            Found::Ambiguous(w, o) => format!("ambiguous: {w}: {}", o.join(" ")),
        }
    }

    #[test]
    fn prefixes_find_commands() {
        let t = |line: &str| {
            let tokens: Vec<&str> = line.split_whitespace().collect();
            words(find(CMDS, &tokens))
        };
        assert_eq!(t("ip a s"), "ip address show | ");
        assert_eq!(
            t("IP Address Init 1.2.3.4/8 dev eth0"),
            "ip address init | 1.2.3.4/8 dev eth0"
        );
        assert_eq!(t("da 12/31/2026"), "date | 12/31/2026");
        assert_eq!(t("d"), "ambiguous: d: date dns");
        assert_eq!(
            t("ip"),
            "incomplete: ip address init ADDRESS/PREFIX dev eth0, ip address show, ip route show"
        );
        assert_eq!(t("ip bogus"), "unknown: ip bogus");
        assert_eq!(t("nothing"), "unknown: nothing");
    }

    #[test]
    fn arguments_follow_the_syntax() {
        let a = parse_args("ADDRESS/PREFIX dev eth0", &["10.1.1.5/24", "dev", "eth0"]).expect("ok");
        assert_eq!(a.value(0), "10.1.1.5/24");
        let usage = |r: Result<Args, Failure>| match r {
            Err(Failure::Usage(m)) => m,
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(
            usage(parse_args("ADDRESS/PREFIX dev eth0", &[])),
            "missing ADDRESS/PREFIX"
        );
        assert_eq!(
            usage(parse_args("ADDRESS/PREFIX dev eth0", &["1.1.1.1/8", "via"])),
            "expected 'dev' instead of 'via'"
        );
        match parse_args("ADDRESS/PREFIX dev eth0", &["1.1.1.1/8", "dev", "eth1"]) {
            Err(Failure::Error(e)) => assert!(e.to_string().contains("backup network"), "{e}"),
            other => panic!("unexpected {other:?}"),
        }
        let a = parse_args("IPADDRESS [ipv6]", &["::1", "ipv6"]).expect("ok");
        assert_eq!(a.get(1), Some("ipv6"));
        let a = parse_args("IPADDRESS [ipv6]", &["127.0.0.1"]).expect("ok");
        assert_eq!(a.get(1), None);
        assert_eq!(
            usage(parse_args("IPADDRESS [ipv6]", &["a", "b", "c"])),
            "expected 'ipv6' instead of 'b'"
        );
        assert_eq!(
            usage(parse_args("FQDN", &["my", "host.example.com"])),
            "unexpected 'host.example.com' (a value cannot contain spaces)"
        );
        assert_eq!(
            parse_args("set suiteb|compatible", &["set", "SuiteB"])
                .expect("ok")
                .value(0),
            "suiteb"
        );
        assert_eq!(usage(parse_args("", &["x"])), "unexpected 'x'");
    }
}
