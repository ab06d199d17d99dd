//! Reports of a benchmark: a terminal table, JSON, and an SVG plot of
//! goodput against link rate per mode.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;

use crate::Traffic;
use crate::run::RunResult;

/// The table of results, one row per run, with notes under it: goodput
/// columns, or for `interactive` runs round-trip latency columns.
pub fn table(results: &[RunResult]) -> String {
    let (interactive, other): (Vec<RunResult>, Vec<RunResult>) = results
        .iter()
        .cloned()
        .partition(|r| r.traffic == Traffic::Interactive);
    let mut s = String::new();
    if !other.is_empty() {
        goodput_rows(&mut s, &other);
    }
    if !interactive.is_empty() {
        latency_rows(&mut s, &interactive);
    }
    for note in notes(results) {
        let _ = writeln!(s, "note: {note}");
    }
    s
}

/// Rows of exchanges one at a time on a persistent connection: how many,
/// how fast, and their round trips in microseconds.
fn latency_rows(s: &mut String, results: &[RunResult]) {
    let _ = writeln!(
        s,
        "{:<9} {:<10} {:<8} {:>7} {:>8} {:>15} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>10} {:>6}  frames",
        "scenario",
        "mode",
        "workload",
        "clients",
        "response",
        "ok/exchanges",
        "exch/s",
        "p50 us",
        "p99 us",
        "max us",
        "verified",
        "link up",
        "link down",
        "cpu s",
    );
    for r in results {
        let link = |n: u64| {
            if r.scenario.emulated {
                bytes(n)
            } else {
                "-".to_string()
            }
        };
        let _ = writeln!(
            s,
            "{:<9} {:<10} {:<8} {:>7} {:>8} {:>15} {:>9.1} {:>9} {:>9} {:>9} {:>10} {:>10} {:>10} {:>6.1}  {}",
            r.scenario.name,
            r.path,
            r.workload,
            r.clients,
            bytes(r.response_bytes),
            format!("{}/{}", r.complete, r.requests),
            r.exchanges_per_s,
            us(r.latency_p50_us),
            us(r.latency_p99_us),
            us(r.latency_max_us),
            bytes(r.bytes_verified),
            link(r.link_bytes_up),
            link(r.link_bytes_down),
            r.cpu_s,
            frames(r),
        );
    }
}

fn frames(r: &RunResult) -> String {
    let f = r
        .frames
        .iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect::<Vec<_>>()
        .join(" ");
    if f.is_empty() { "-".into() } else { f }
}

/// Rows of the goodput table.
fn goodput_rows(s: &mut String, results: &[RunResult]) {
    let _ = writeln!(
        s,
        "{:<9} {:<6} {:<8} {:>9} {:>13} {:>6} {:>11} {:>11} {:>9} {:>9} {:>6} {:>5}  frames",
        "scenario",
        "mode",
        "workload",
        "ok/reqs",
        "goodput",
        "ratio",
        "link up",
        "link down",
        "p50",
        "p99",
        "cpu s",
        "drop"
    );
    for r in results {
        let (ratio, up, down) = if r.scenario.emulated {
            (
                format!("{:.2}", r.ratio),
                bytes(r.link_bytes_up),
                bytes(r.link_bytes_down),
            )
        } else {
            ("-".into(), "-".into(), "-".into())
        };
        let _ = writeln!(
            s,
            "{:<9} {:<6} {:<8} {:>9} {:>13} {:>6} {:>11} {:>11} {:>9} {:>9} {:>6.1} {:>5}  {}",
            r.scenario.name,
            r.path,
            r.workload,
            format!("{}/{}", r.complete, r.requests),
            rate(r.goodput_bps),
            ratio,
            up,
            down,
            ms(r.latency_p50_ms),
            ms(r.latency_p99_ms),
            r.cpu_s,
            r.link_packets_dropped,
            frames(r)
        );
    }
}

/// Explanations the numbers need.
pub fn notes(results: &[RunResult]) -> Vec<String> {
    let mut out = Vec::new();
    if results.iter().any(|r| r.traffic != Traffic::Interactive) {
        out.push(
            "goodput = complete response bytes / wall time (first request to last response); \
             ratio = application bytes / link payload bytes, both directions (headers not counted)"
                .to_string(),
        );
    }
    out.push(
        "cpu s = the whole bench process (clients, server, relays, both proxies and the model)"
            .to_string(),
    );
    if let Some(r) = results.iter().find(|r| r.traffic == Traffic::Interactive) {
        out.push(format!(
            "interactive: each client holds one TCP connection and makes one exchange at a time \
             ({} B request, {} B response, every response byte compared with what the server sent); \
             round trip = request write to last response byte (connecting not included); \
             exch/s = complete exchanges / wall time, all clients together",
            crate::interactive::REQUEST_LEN,
            r.response_bytes
        ));
    }
    if results
        .iter()
        .any(|r| r.traffic == Traffic::Interactive && r.scenario.emulated && r.mode.is_tcp_link())
    {
        out.push(
            "interactive on an emulated link: the first exchange of each direct or relay client \
             also waits out the TCP link relay's emulated handshake (one RTT), which shows in max"
                .into(),
        );
    }
    if let Some(r) = results.iter().find(|r| r.flush_idle_ms.is_some()) {
        out.push(format!(
            "tunnel runs use the proxies' default settings: flush_idle {} ms, flush_max {} ms",
            r.flush_idle_ms.unwrap_or(f64::NAN),
            r.flush_max_ms.unwrap_or(f64::NAN)
        ));
    }
    if results.iter().any(|r| !r.scenario.emulated) {
        out.push(
            "loopback: no emulator in the path (direct: client to server; relay: one user-space \
             TCP relay; quic: TCP into one QUIC connection over loopback UDP and out, no framing; \
             tunnel: sender and receiver over loopback UDP); link bytes not counted"
                .into(),
        );
    }
    if results.iter().any(|r| r.app == crate::run::App::NginxCurl) {
        out.push(
            "app nginx-curl: nginx and curl run as child processes, outside cpu s; \
             application bytes include HTTP request and response headers"
                .into(),
        );
    }
    for r in results
        .iter()
        .filter(|r| r.response_bytes > r.workload_bytes)
    {
        let note = format!(
            "workload {}: responses of {} B repeat its {} B, which flatters compression; \
             pass a larger file or directory as --workload",
            r.workload, r.response_bytes, r.workload_bytes
        );
        if !out.contains(&note) {
            out.push(note);
        }
    }
    let lossy_direct = results
        .iter()
        .any(|r| r.mode.is_tcp_link() && r.scenario.loss > 0.0);
    if lossy_direct {
        out.push(
            "loss applies to UDP only: the TCP relay of the direct and relay baselines cannot drop \
             TCP bytes, so those runs see no loss"
                .into(),
        );
    }
    let bad: Vec<String> = results
        .iter()
        .filter(|r| r.corrupt + r.errors + r.unfinished > 0)
        .map(|r| {
            format!(
                "{} {} {}: {} corrupt, {} failed, {} unfinished",
                r.scenario.name, r.path, r.workload, r.corrupt, r.errors, r.unfinished
            )
        })
        .collect();
    out.extend(bad);
    out
}

/// The results as pretty-printed JSON.
pub fn json(results: &[RunResult]) -> Result<String> {
    serde_json::to_string_pretty(results).context("serializing results")
}

/// Writes an SVG plot of goodput against link rate, one line per mode (and
/// workload, if there are several), both axes logarithmic, with the link
/// rate itself as a dashed reference. Runs on unlimited links are left out.
pub fn plot(results: &[RunResult], path: &Path) -> Result<()> {
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let several = results
        .iter()
        .any(|r| results.first().is_some_and(|f| f.workload != r.workload));
    for r in results {
        let Some(rate) = r.scenario.rate_bps else {
            continue;
        };
        let key = if several {
            format!("{} {}", r.path, r.workload)
        } else {
            r.path.clone()
        };
        series
            .entry(key)
            .or_default()
            .push((rate as f64, r.goodput_bps.max(1.0)));
    }
    let points = series.values().flatten();
    let (mut x0, mut x1, mut y1) = (f64::MAX, 1.0f64, 1.0f64);
    for (x, y) in points {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y1 = y1.max(*y).max(*x);
    }
    if series.is_empty() {
        x0 = 1e3;
        x1 = 1e9;
        y1 = 1e9;
    }
    let y0 = series
        .values()
        .flatten()
        .map(|p| p.1)
        .fold(x0, f64::min)
        .max(1.0);
    let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
    let draw = |e: &dyn std::fmt::Display| anyhow::anyhow!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("LLMPack goodput vs link rate", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (x0 / 2.0..x1 * 2.0).log_scale(),
            (y0 / 2.0..y1 * 4.0).log_scale(),
        )
        .map_err(|e| draw(&e))?;
    chart
        .configure_mesh()
        .x_desc("link rate (bit/s)")
        .y_desc("goodput (bit/s)")
        .x_label_formatter(&|v| rate(*v))
        .y_label_formatter(&|v| rate(*v))
        .draw()
        .map_err(|e| draw(&e))?;
    let reference = [(x0 / 2.0, x0 / 2.0), (x1 * 2.0, x1 * 2.0)];
    chart
        .draw_series(DashedLineSeries::new(
            reference,
            6,
            4,
            BLACK.mix(0.4).into(),
        ))
        .map_err(|e| draw(&e))?
        .label("link rate")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.4)));
    for (i, (name, mut pts)) in series.into_iter().enumerate() {
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(|e| draw(&e))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(PointSeries::of_element(
                pts,
                4,
                color.filled(),
                &|c, s, st| Circle::new(c, s, st),
            ))
            .map_err(|e| draw(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| draw(&e))?;
    root.present().map_err(|e| draw(&e))?;
    Ok(())
}

/// A rate in bits per second, e.g. `64.0 kbit/s`.
pub fn rate(bps: f64) -> String {
    match bps {
        b if b >= 1e9 => format!("{:.2} Gbit/s", b / 1e9),
        b if b >= 1e6 => format!("{:.2} Mbit/s", b / 1e6),
        b if b >= 1e3 => format!("{:.1} kbit/s", b / 1e3),
        b => format!("{b:.0} bit/s"),
    }
}

/// A byte count, e.g. `2.0 KiB`.
pub(crate) fn bytes(n: u64) -> String {
    let b = n as f64;
    match n {
        n if n >= 1 << 30 => format!("{:.2} GiB", b / f64::from(1u32 << 30)),
        n if n >= 1 << 20 => format!("{:.2} MiB", b / f64::from(1u32 << 20)),
        n if n >= 1 << 10 => format!("{:.1} KiB", b / 1024.0),
        n => format!("{n} B"),
    }
}

fn us(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else {
        format!("{v:.0}")
    }
}

fn ms(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v >= 10_000.0 {
        format!("{:.1} s", v / 1e3)
    } else {
        format!("{v:.0} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(rate(64_000.0), "64.0 kbit/s");
        assert_eq!(rate(1.5e6), "1.50 Mbit/s");
        assert_eq!(bytes(2048), "2.0 KiB");
        assert_eq!(ms(f64::NAN), "-");
        assert_eq!(us(1234.567), "1235");
        assert_eq!(us(f64::NAN), "-");
    }
}
