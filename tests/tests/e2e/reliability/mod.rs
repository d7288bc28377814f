//! Reliability (issue #7, `RELIABILITY.md`): what nginx and the writer do while things go wrong.
//!
//! - the writer SIGKILLed during a write storm while clients request routed hosts;
//! - hostile table files loaded by real nginx workers;
//! - `reload` and the binary upgrade (USR2, WINCH, QUIT) while clients send requests;
//! - a battery of bad API requests, with the store and the table compared byte for byte;
//! - a full disk under the store and the table, or under the table alone (tmpfs); a read-only
//!   store;
//! - the table file deleted or replaced under nginx;
//! - who may write the table and the store, connect to the socket, read the token.
//!
//! Each test prints one `RELIABILITY <name> key=value…` line with its figures. The defaults are
//! short (`make test`); `make soak` lengthens them with `SB_RELIABILITY_KILLS`,
//! `SB_RELIABILITY_RELOADS`, `SB_RELIABILITY_UPGRADES` and `SB_RELIABILITY_RANDOM_TABLES`.
//! The tests that mount file systems or switch users need root and say so when skipped.

mod api_abuse;
mod crashes;
mod hostile;
mod nginx_operations;
mod permissions;
mod resources;

use set_backend_tests::running_as_root;

fn skip_unless_root(test: &str) -> bool {
    if running_as_root() {
        return false;
    }
    eprintln!("SKIPPED {test}: needs root (mounts a tmpfs / switches users); CI runs as root");
    true
}
