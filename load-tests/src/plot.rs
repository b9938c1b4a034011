//! Plots of a results folder (the JSON files the scenarios wrote), as SVG files next to
//! them: fan-out latency against delivered events per second, server memory against
//! idle connections, and acknowledged board commands per second against writers. Each
//! run's `--label` (the store, "baseline", "cluster") names its series.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use serde_json::Value;

type Series = BTreeMap<String, Vec<(f64, f64)>>;

pub fn run(flags: &crate::Flags) {
    let dir = flags.get("results", "", "");
    assert!(!dir.is_empty(), "--results DIR");
    let mut runs = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot read {dir}: {e}")) {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).expect("a readable result");
            if let Ok(v) = serde_json::from_str::<Value>(&text) {
                runs.push(v);
            }
        }
    }
    let mut latency = Series::new();
    let mut memory = Series::new();
    let mut throughput = Series::new();
    for r in &runs {
        let label = r["label"].as_str().filter(|l| !l.is_empty()).unwrap_or("unlabelled");
        let (p, res) = (&r["params"], &r["results"]);
        let num = |v: &Value| v.as_f64().unwrap_or(0.0);
        match r["scenario"].as_str() {
            Some("fanout") | Some("baseline-fanout") => {
                let x = num(&res["events_per_sec"]);
                for q in ["p50", "p99"] {
                    latency
                        .entry(format!("{label} {q}"))
                        .or_default()
                        .push((x, num(&res["latency_ms"][q])));
                }
            }
            Some("idle") => memory
                .entry(label.to_string())
                .or_default()
                .push((num(&res["held"]), num(&res["server_rss_after_bytes"]) / (1024.0 * 1024.0))),
            Some("hot") => throughput
                .entry(label.to_string())
                .or_default()
                .push((num(&p["writers"]), num(&res["acked_per_sec"]))),
            _ => {}
        }
    }
    let out = Path::new(&dir);
    let charts = [
        (
            "fanout-latency.svg",
            "Board fan-out latency against load",
            "delivered events/s",
            "latency (ms)",
            latency,
        ),
        (
            "idle-memory.svg",
            "Server memory against idle connections",
            "connections held",
            "server RSS (MiB)",
            memory,
        ),
        (
            "hot-throughput.svg",
            "Durable board commands on one hot board",
            "writers",
            "acknowledged commands/s",
            throughput,
        ),
    ];
    for (file, title, x, y, series) in charts {
        if series.is_empty() {
            continue;
        }
        let path = out.join(file);
        std::fs::write(&path, chart(title, x, y, series)).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        eprintln!("wrote {}", path.display());
    }
    print!("{}", ratios(&runs));
}

/// Markdown tables of Shoal's figures over the baselines' in the same results: fan-out
/// against the bare broadcast server at the same viewers and writers, and durable board
/// commands against the same store's raw batched inserts.
fn ratios(runs: &[Value]) -> String {
    let of = |scenario: &'static str| runs.iter().filter(move |r| r["scenario"] == scenario);
    let num = |v: &Value| v.as_f64().unwrap_or(0.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n| fan-out | viewers | writers | events/s | baseline events/s | ratio | p99 ms | baseline p99 ms |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    for r in of("fanout") {
        let key = |r: &Value| (r["params"]["viewers"].clone(), r["params"]["writers"].clone());
        let Some(b) = of("baseline-fanout").find(|b| key(b) == key(r)) else {
            continue;
        };
        let (e, be) = (num(&r["results"]["events_per_sec"]), num(&b["results"]["events_per_sec"]));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {e:.0} | {be:.0} | {:.2} | {:.2} | {:.2} |",
            r["label"].as_str().unwrap_or(""),
            r["params"]["viewers"],
            r["params"]["writers"],
            e / be.max(1.0),
            num(&r["results"]["latency_ms"]["p99"]),
            num(&b["results"]["latency_ms"]["p99"]),
        );
    }
    let _ = writeln!(
        s,
        "\n| store | best acknowledged board commands/s | raw inserted rows/s (batched) | ratio |"
    );
    let _ = writeln!(s, "|---|---|---|---|");
    for store in ["sqlite", "postgres"] {
        let best = of("hot")
            .filter(|r| r["label"] == store)
            .map(|r| num(&r["results"]["acked_per_sec"]))
            .fold(0.0, f64::max);
        let raw = of("baseline-insert")
            .filter(|r| r["params"]["store"] == store)
            .map(|r| num(&r["results"]["rows_per_sec"]))
            .fold(0.0, f64::max);
        if best > 0.0 && raw > 0.0 {
            let _ = writeln!(s, "| {store} | {best:.0} | {raw:.0} | {:.3} |", best / raw);
        }
    }
    s
}

/// A round step that divides `span` into about five parts.
fn step(span: f64) -> f64 {
    let raw = (span / 5.0).max(f64::MIN_POSITIVE);
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude)
}

fn label(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{}k", v / 1000.0)
    } else if v.fract() == 0.0 {
        format!("{v}")
    } else {
        format!("{v:.1}")
    }
}

/// A line chart with both axes from zero, one line and marker per series.
fn chart(title: &str, x_name: &str, y_name: &str, mut series: Series) -> String {
    const COLOURS: [&str; 8] = [
        "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    ];
    let (w, h, left, right, top, bottom) = (760.0, 440.0, 80.0, 200.0, 40.0, 60.0);
    for points in series.values_mut() {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let all = series.values().flatten();
    let max_x = all.clone().map(|p| p.0).fold(0.0, f64::max);
    let max_y = all.map(|p| p.1).fold(0.0, f64::max);
    let (sx, sy) = (step(max_x), step(max_y));
    let (top_x, top_y) = ((max_x / sx).ceil().max(1.0) * sx, (max_y / sy).ceil().max(1.0) * sy);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let px = |x: f64| left + x / top_x * pw;
    let py = |y: f64| top + ph - y / top_y * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{title}</text>"#,
        left + pw / 2.0
    );
    let mut t = 0.0;
    while t <= top_x + sx / 2.0 {
        let x = px(t);
        let _ = writeln!(s, r##"<line x1="{x}" y1="{top}" x2="{x}" y2="{}" stroke="#e5e5e5"/>"##, top + ph);
        let _ = writeln!(
            s,
            r#"<text x="{x}" y="{}" text-anchor="middle">{}</text>"#,
            top + ph + 16.0,
            label(t)
        );
        t += sx;
    }
    let mut t = 0.0;
    while t <= top_y + sy / 2.0 {
        let y = py(t);
        let _ = writeln!(s, r##"<line x1="{left}" y1="{y}" x2="{}" y2="{y}" stroke="#e5e5e5"/>"##, left + pw);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            left - 6.0,
            y + 4.0,
            label(t)
        );
        t += sy;
    }
    let _ = writeln!(
        s,
        r#"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{x_name}</text>"#,
        left + pw / 2.0,
        h - 18.0
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{}" text-anchor="middle" transform="rotate(-90 18 {})">{y_name}</text>"#,
        top + ph / 2.0,
        top + ph / 2.0
    );
    // A run's percentiles share its colour; p50 is dashed.
    let mut bases: Vec<&str> = series.keys().map(|k| k.trim_end_matches(" p50").trim_end_matches(" p99")).collect();
    bases.dedup();
    for (i, (name, points)) in series.iter().enumerate() {
        let base = name.trim_end_matches(" p50").trim_end_matches(" p99");
        let colour = COLOURS[bases.iter().position(|b| *b == base).unwrap_or(0) % COLOURS.len()];
        let dashed = if name.ends_with("p50") { r#" stroke-dasharray="5 4""# } else { "" };
        let line: Vec<String> = points.iter().map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y))).collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"{dashed}/>"#,
            line.join(" ")
        );
        for (x, y) in points {
            let _ = writeln!(s, r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"/>"#, px(*x), py(*y));
        }
        let ly = top + 10.0 + i as f64 * 18.0;
        let lx = left + pw + 14.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="2"{dashed}/>"#,
            lx + 22.0
        );
        let _ = writeln!(s, r#"<text x="{}" y="{}">{}</text>"#, lx + 28.0, ly + 4.0, escape(name));
    }
    s.push_str("</svg>\n");
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_steps_are_round_and_cover_the_data() {
        assert_eq!(step(100.0), 20.0);
        assert_eq!(step(173_854.0), 50_000.0);
        assert_eq!(step(7.0), 2.0);
        assert!(step(0.0) > 0.0);
    }

    #[test]
    fn a_chart_draws_every_series_and_its_legend() {
        let mut series = Series::new();
        series.insert("sqlite p99".into(), vec![(2.0, 5.0), (1.0, 3.0)]);
        series.insert("baseline p99".into(), vec![(1.0, 1.0)]);
        let svg = chart("T", "x", "y", series);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains(">sqlite p99<") && svg.contains(">baseline p99<"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }
}
