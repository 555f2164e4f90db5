//! `custos-cli`, the admin CLI of spec §3: the menu shell of `cliadmin`, its
//! login shell over SSH (port 22) and on the VM console. The library is the
//! whole shell; `main.rs` only parses the flags, opens the store and the
//! terminal. It is a library so that the fuzz target `cli_line` reaches the
//! parser of typed lines (`session::resolve`, `menu::find`,
//! `menu::parse_args`).
//!
//! Decisions where the spec is silent:
//!
//! * **Invocation.** With no flags, or started as a login shell (`argv[0]`
//!   begins with `-`), it works on the appliance: store `/var/lib/custos`,
//!   root `/`. `--data DIR --root ROOT` runs it against a development data
//!   directory. It must run as root; started by another user in appliance
//!   mode it re-executes itself with `sudo -n` (no arguments), so the image
//!   grants `cliadmin ALL=(root) NOPASSWD: /usr/bin/custos-cli ""`. A
//!   command line (`ssh cliadmin@host CMD`, i.e. `-c CMD`) is refused: the
//!   CLI is interactive.
//! * **Authentication** is the operating system's: sshd or login (PAM) has
//!   checked the password before the shell starts, and a development run
//!   already holds the data directory and its master key. The CLI does the
//!   first-login steps of §2: the licence agreement (type `Y`), then the
//!   forced password change, which asks for the current password (wrong
//!   answers count towards the §6 lock-out, shared rules with the web
//!   accounts), then a new one twice (§6 policy). The new password is set
//!   for the operating system (`chpasswd`, so sshd accepts it) and in the
//!   store (argon2id). A locked account ends the session at once.
//! * **The account's state** (agreement, must-change, hash, failures,
//!   lock-out) is the store's `cli_account` row; every sign-in, failure and
//!   change is audited with author `cliadmin`, edge `cli` and as source the
//!   SSH client's address (`SSH_CONNECTION`) or `console`.
//! * **Where changes go** is `host::Host`, one switch: root `/` runs the
//!   systemd commands; any other root records them in
//!   `ROOT/var/lib/custos-cli/actions.log`. Configuration files are written
//!   under the root in both cases (`render` is the only module that renders
//!   them). OS settings (eth0, DNS, NTP, host name) are kept typed in the
//!   store (`os_settings`, not part of backups) and the files are rendered
//!   from there; the time zone and the clock belong to the system only.
//! * **Syntax.** Every keyword (category, command word) may be a unique
//!   prefix; literal words inside the arguments (`dev`, `via`, `timeout`)
//!   must be typed in full. A category name followed by a command runs it
//!   without entering the category. `?` may end any line to list what
//!   matches. The counter counts non-empty lines. A refused line (unknown,
//!   too long, not UTF-8) ends with `ERROR:`; navigation (`?`, a category,
//!   `up`) prints no closing line. Answering anything but `yes` to
//!   `Continue?` prints `ERROR: cancelled; nothing was changed`.
//! * **Network.** `ip address init` makes eth0 static (DHCP off) and drops
//!   a default gateway outside the new network; `ip route add` requires the
//!   gateway to be inside eth0's network. Both ask to continue, like
//!   `ip dhcp release`: each can disconnect the session.
//! * **Clock.** `date` and `time` set the local time through timedated and
//!   are refused while NTP is on (timedated refuses them too).

mod backup;
mod ha;
pub mod host;
mod maintenance;
pub mod menu;
mod network;
mod probe;
mod render;
pub mod session;
mod system;
pub mod term;
