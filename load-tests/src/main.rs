//! Load generator for a Shoal server on this machine. Each scenario sets up its own
//! workspace, drives the server, and prints a Markdown table row; with `--json FILE` it
//! also writes its parameters and results as JSON.
//!
//!     shoal-load fanout --url http://127.0.0.1:8080 --viewers 20 --moves 500
//!     shoal-load hot --url http://127.0.0.1:8080 --writers 64 --secs 10
//!     shoal-load rest --url http://127.0.0.1:8080 --clients 32 --secs 10
//!     shoal-load idle --url http://127.0.0.1:8080 --connections 20000
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
mod plot;
mod rest;
mod setup;

use std::collections::HashMap;

use serde_json::Value;

/// Flags as given, checked by each scenario.
pub struct Flags {
    values: HashMap<String, String>,
}

impl Flags {
    fn parse(args: impl Iterator<Item = String>) -> Flags {
        let mut values = HashMap::new();
        let mut it = args;
        while let Some(flag) = it.next() {
            let name = flag
                .strip_prefix("--")
                .unwrap_or_else(|| panic!("expected a --flag, got {flag}"))
                .to_string();
            let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
            values.insert(name, value);
        }
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

    fn known(&self, names: &[&str]) {
        for k in self.values.keys() {
            assert!(
                names.contains(&k.as_str()) || ["preset", "json", "url", "label"].contains(&k.as_str()),
                "unknown flag --{k}; this scenario takes {names:?}, --url, --preset, --json, --label"
            );
        }
    }
}

/// One scenario's outcome: its parameters and measured figures, and a Markdown row.
pub struct Outcome {
    pub json: Value,
    pub header: Vec<&'static str>,
    pub row: Vec<String>,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let scenario = args.next().unwrap_or_default();
    let flags = Flags::parse(args);
    // These two are not load scenarios: a server with a runtime of its own, and the
    // plots drawn from earlier results.
    match scenario.as_str() {
        "baseline-server" => {
            flags.known(&["port", "secs"]);
            return baseline::serve(&flags);
        }
        "plot" => {
            flags.known(&["results"]);
            return plot::run(&flags);
        }
        _ => {}
    }
    actix_rt::System::new().block_on(scenario_main(scenario, flags));
}

async fn scenario_main(scenario: String, flags: Flags) {
    let outcome = match scenario.as_str() {
        "fanout" => {
            flags.known(&["writer-url", "viewers", "writers", "moves"]);
            fanout::run(&flags).await
        }
        "hot" => {
            flags.known(&["writers", "secs", "via"]);
            hot::run(&flags).await
        }
        "rest" => {
            flags.known(&["clients", "secs", "write-percent"]);
            rest::run(&flags).await
        }
        "idle" => {
            flags.known(&["connections", "boards", "hold-secs"]);
            idle::run(&flags).await
        }
        "baseline-fanout" => {
            flags.known(&["viewers", "writers", "moves"]);
            baseline::fanout(&flags).await
        }
        "baseline-insert" => {
            flags.known(&["database-url", "batch", "rows"]);
            baseline::insert(&flags).await
        }
        _ => panic!(
            "usage: shoal-load fanout|hot|rest|idle|baseline-fanout|baseline-insert [--url URL] [--preset smoke|full] [--json FILE] [flags]\n   or: shoal-load baseline-server [--port P] [--secs S]\n   or: shoal-load plot --results DIR"
        ),
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
