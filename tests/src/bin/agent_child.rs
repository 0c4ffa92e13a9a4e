//! `agent-child`: the desktop agent's run loop (`Agent::run`, the very loop `idem-agent run`
//! runs) as a separate process, for the test that kills it with SIGKILL mid-sync. Arguments:
//! the agent's state directory and its accounts file. Prints `cursor N` after each applied
//! page (the test times its kills by these lines; the real binary logs them to stderr).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::time::Duration;

use agent::accounts::FileAccounts;
use agent::desktop::Agent;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut agent = Agent::open(args[0].as_ref(), FileAccounts::new(&args[1])).unwrap();
    agent
        .run(
            Duration::from_secs(1),
            |agent, _| {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "cursor {}", agent.state.cursor.unwrap_or(0));
                let _ = out.flush();
            },
            |e, _| eprintln!("sync failed: {e}"),
        )
        .await
}
