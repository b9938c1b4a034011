//! Load generator for a Shoal server on this machine. Each scenario sets up its own
//! workspace, drives the server, and prints a Markdown table row; with `--json FILE` it
//! also writes its parameters and results as JSON.
//!
//!     shoal-load fanout --url http://127.0.0.1:8080 --viewers 20 --moves 500
//!     shoal-load hot --url http://127.0.0.1:8080 --writers 64 --secs 10
//!     shoal-load rest --url http://127.0.0.1:8080 --clients 32 --secs 10
//!     shoal-load idle --url http://127.0.0.1:8080 --connections 20000
//!     shoal-load inbox --url http://127.0.0.1:8080 --conversations 100000 --messages 10
//!     shoal-load baseline-server --port 18099
//!     shoal-load baseline-fanout --url ws://127.0.0.1:18099 --viewers 200
//!     shoal-load baseline-insert --database-url postgres://127.0.0.1/bench --batch 256
//!     shoal-load plot --results DIR
//!
//! Every run targets loopback addresses only, is bounded in count and time, and stops
//! by itself. `--preset smoke` runs a tiny load in seconds, so the harness cannot rot.

mod baseline;
mod fanout;
mod hot;
mod idle;
mod inbox;
mod plot;
mod rest;
mod setup;

use std::collections::HashMap;

use serde_json::Value;

/// Flags as given, checked by each scenario.
pub struct Flags {
    values: HashMap<String, String>,
}

/// A flag's name and what it means.
type Flag = (&'static str, &'static str);

/// Each command, what it does, and its own flags.
const COMMANDS: &[(&str, &str, &[Flag])] = &[
    (
        "fanout",
        "W writers move deals on one board while V viewers follow it: delivered events/s and latency",
        &[
            ("writer-url", "send the moves to this node (cross-node fan-out) [default: --url]"),
            ("viewers", "WebSocket viewers [smoke 3, full 20]"),
            ("writers", "concurrent writers [1]"),
            ("moves", "moves per writer [smoke 30, full 500]"),
        ],
    ),
    (
        "hot",
        "W writers move deals on one board as fast as acknowledged: acknowledged commands/s",
        &[
            ("writers", "concurrent writers, one command in flight each [smoke 4, full 256]"),
            ("secs", "how long to run [smoke 2, full 10]"),
            ("via", "ws (WebSocket commands) or rest [ws]"),
        ],
    ),
    (
        "rest",
        "C clients list, get, create and update deals and contacts: requests/s and latency",
        &[
            ("clients", "concurrent clients [smoke 4, full 32]"),
            ("secs", "how long to run [smoke 2, full 10]"),
            ("write-percent", "share of requests that write [10]"),
        ],
    ),
    (
        "idle",
        "C WebSocket connections held open: server memory per connection, connects/s",
        &[
            ("connections", "connections to hold [smoke 200, full 20000]"),
            ("boards", "boards they follow [smoke 2, full 100]"),
            ("hold-secs", "how long to hold them [smoke 1, full 5]"),
        ],
    ),
    (
        "inbox",
        "W writers post customers' messages to an inbox; then its filters, opening a long conversation, fan-out to A agents",
        &[
            ("conversations", "conversations to fill the inbox with [smoke 20, full 100000]"),
            ("messages", "messages per conversation [smoke 5, full 10]"),
            ("writers", "concurrent posters, one message in flight each [smoke 4, full 64]"),
            ("agents", "agents following the inbox over WebSockets [smoke 3, full 50]"),
            ("probes", "timed requests per filter, opens, live messages [smoke 20, full 300]"),
            ("long", "messages in the conversation that is opened [smoke 50, full 500]"),
            (
                "settle-secs",
                "seconds to wait before the timed requests, e.g. for PostgreSQL's autovacuum to analyze what was just loaded [0]",
            ),
        ],
    ),
    (
        "baseline-fanout",
        "fanout against baseline-server: the bare broadcast rate on this machine",
        &[
            ("viewers", "WebSocket viewers [smoke 3, full 20]"),
            ("writers", "concurrent writers [1]"),
            ("moves", "messages per writer [smoke 30, full 500]"),
        ],
    ),
    (
        "baseline-insert",
        "the store's raw group-commit rate: multi-row INSERT transactions on one connection",
        &[
            ("database-url", "postgres://… or sqlite:… to insert into (required)"),
            ("batch", "rows per transaction [smoke 64, full 256]"),
            ("rows", "rows in all [smoke 2000, full 200000]"),
        ],
    ),
    (
        "baseline-server",
        "a bare tokio-tungstenite broadcast server, for baseline-fanout",
        &[
            ("port", "port to listen on, 0 for any [0]"),
            ("secs", "how long to serve [smoke 60, full 3600]"),
        ],
    ),
    (
        "plot",
        "SVG plots of the runs in a results folder",
        &[("results", "the results folder (required)")],
    ),
];

/// Flags every load scenario takes.
const COMMON: &[Flag] = &[
    ("url", "the Shoal server, on a loopback address [http://127.0.0.1:8080]"),
    ("preset", "smoke (a tiny load, seconds) or full [full]"),
    ("json", "also write the parameters and figures to this file"),
    ("label", "a label for this run in the JSON"),
];

/// Reads the command line: `--help` on the command or any subcommand lists its flags;
/// an unknown flag or a flag without its value ends with usage, not a panic.
fn cli() -> clap::Command {
    let flag = |(name, help): &(&'static str, &'static str)| clap::Arg::new(*name).long(*name).value_name("VALUE").help(*help);
    let mut cmd = clap::Command::new("shoal-load")
        .about("Load generator for a Shoal server on this machine (loopback addresses only)")
        .subcommand_required(true)
        .arg_required_else_help(true);
    for (name, about, flags) in COMMANDS {
        let mut sub = clap::Command::new(*name).about(*about).args(flags.iter().map(flag));
        if !matches!(*name, "baseline-server" | "plot") {
            sub = sub.args(COMMON.iter().map(flag));
        }
        cmd = cmd.subcommand(sub);
    }
    cmd
}

impl Flags {
    fn from_matches(m: &clap::ArgMatches) -> Flags {
        let values = m
            .ids()
            .filter_map(|id| Some((id.to_string(), m.get_one::<String>(id.as_str())?.clone())))
            .collect();
        Flags { values }
    }

    /// A flag's value, the preset's, or the default.
    pub fn get(&self, name: &str, smoke: &str, full: &str) -> String {
        self.values.get(name).cloned().unwrap_or_else(|| match self.preset() {
            "smoke" => smoke.to_string(),
            _ => full.to_string(),
        })
    }

    pub fn number(&self, name: &str, smoke: usize, full: usize) -> usize {
        self.get(name, &smoke.to_string(), &full.to_string())
            .parse()
            .unwrap_or_else(|_| panic!("--{name} is a number"))
    }

    pub fn preset(&self) -> &str {
        self.values.get("preset").map(String::as_str).unwrap_or("full")
    }

    /// A server URL, checked to be on this machine.
    pub fn url(&self, name: &str) -> Option<String> {
        let url = self
            .values
            .get(name)
            .cloned()
            .or_else(|| (name == "url").then(|| "http://127.0.0.1:8080".into()))?;
        let host = url.trim_start_matches("http://").split([':', '/']).next().unwrap_or("");
        assert!(
            host == "localhost" || host.starts_with("127."),
            "load tests only target this machine's loopback addresses"
        );
        Some(url)
    }
}

/// One scenario's outcome: its parameters and measured figures, and a Markdown row.
pub struct Outcome {
    pub json: Value,
    pub header: Vec<&'static str>,
    pub row: Vec<String>,
}

fn main() {
    let matches = cli().get_matches();
    let Some((scenario, sub)) = matches.subcommand() else {
        unreachable!("clap requires a subcommand")
    };
    let (scenario, flags) = (scenario.to_string(), Flags::from_matches(sub));
    // These two are not load scenarios: a server with a runtime of its own, and the
    // plots drawn from earlier results.
    match scenario.as_str() {
        "baseline-server" => return baseline::serve(&flags),
        "plot" => return plot::run(&flags),
        _ => {}
    }
    actix_rt::System::new().block_on(scenario_main(scenario, flags));
}

async fn scenario_main(scenario: String, flags: Flags) {
    let outcome = match scenario.as_str() {
        "fanout" => fanout::run(&flags).await,
        "hot" => hot::run(&flags).await,
        "rest" => rest::run(&flags).await,
        "idle" => idle::run(&flags).await,
        "inbox" => inbox::run(&flags).await,
        "baseline-fanout" => baseline::fanout(&flags).await,
        "baseline-insert" => baseline::insert(&flags).await,
        other => unreachable!("clap knows only the commands of COMMANDS, not {other}"),
    };
    let mut json = outcome.json;
    json["scenario"] = Value::from(scenario.as_str());
    json["preset"] = Value::from(flags.preset());
    json["label"] = Value::from(flags.get("label", "", ""));
    println!("| {} |", outcome.header.join(" | "));
    println!("|{}", "---|".repeat(outcome.header.len()));
    println!("| {} |", outcome.row.join(" | "));
    if let Some(path) = flags.values.get("json") {
        std::fs::write(path, serde_json::to_string_pretty(&json).unwrap()).unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
    }
}

/// Milliseconds with two decimals, for tables.
pub fn ms(d: std::time::Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_answers_help_with_its_own_flags() {
        for (name, _, flags) in COMMANDS {
            let e = cli().try_get_matches_from(["shoal-load", name, "--help"]).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp, "{name}");
            let help = e.render().to_string();
            for (flag, _) in flags.iter() {
                assert!(help.contains(&format!("--{flag}")), "{name} --help lists --{flag}:\n{help}");
            }
        }
    }

    #[test]
    fn a_flag_without_its_value_or_unknown_is_a_usage_error() {
        let e = cli().try_get_matches_from(["shoal-load", "fanout", "--viewers"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue);
        let e = cli().try_get_matches_from(["shoal-load", "hot", "--viewers", "3"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument);
        let m = cli()
            .try_get_matches_from(["shoal-load", "hot", "--writers", "8", "--preset", "smoke"])
            .unwrap();
        let flags = Flags::from_matches(m.subcommand().unwrap().1);
        assert_eq!((flags.number("writers", 1, 2), flags.number("secs", 2, 10)), (8, 2));
    }
}
