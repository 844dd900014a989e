//! The overview (the last 15 minutes per API, as charts) and the APIs page (definitions, targets).

use std::fmt::Write as _;

use http::{Method, Response, StatusCode};
use serde_json::Value;

use crate::admin::stats;
use crate::http_util::Body;
use crate::metrics::recent::{MAX_WINDOW_SECS, SLOT_SECS};
use crate::oauth::login_page::escape;
use crate::proxy::gateway::Gateway;

use super::session::Live;
use super::{Nav, Notice, api, cell, layout, page_response, seg};

/// Chart size in SVG user units; the CSS scales it to the page width.
const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 120.0;

pub(super) async fn overview(gateway: &Gateway, live: &Live, now: u64) -> Response<Body> {
    // The document `GET /stats` serves, from the same function.
    let report = stats::report(gateway, now, MAX_WINDOW_SECS);
    let mut content = String::from(
        "<p>Each API over the last 15 minutes on this node, in 10-second slots. \
         The page refreshes itself every 10 seconds (<a href=\"/ui/\">refresh now</a>).</p>\n\
         <div id=\"overview\" data-refresh=\"10\">\n",
    );
    let empty = Vec::new();
    let apis = report["apis"].as_array().unwrap_or(&empty);
    if apis.is_empty() {
        content.push_str("<p>No API is configured.</p>\n");
    }
    for entry in apis {
        let id = entry["api"].as_str().unwrap_or("");
        api_section(&mut content, id, id, entry);
    }
    api_section(&mut content, "(unrouted)", "", &report["unrouted"]);
    content.push_str("</div>\n");
    page_response(
        StatusCode::OK,
        layout("Overview", Nav::Overview, live, None, &content),
    )
}

fn api_section(out: &mut String, title: &str, id: &str, entry: &Value) {
    let n = |key: &str| entry[key].as_u64().unwrap_or(0);
    let ms = |key: &str| {
        entry[key]
            .as_f64()
            .map(|v| format!("≤ {v} ms"))
            .unwrap_or_else(|| "–".to_owned())
    };
    let empty = Vec::new();
    let series = entry["series"].as_array().unwrap_or(&empty);
    // Requests per second over the last minute (six slots; the current one is still filling).
    let last_minute: u64 = series
        .iter()
        .rev()
        .take(6)
        .map(|s| s["requests"].as_u64().unwrap_or(0))
        .sum();
    let rate = last_minute as f64 / 60.0;
    let _ = write!(
        out,
        "<section class=\"api\" data-api=\"{id}\">\n<h2>{title}</h2>\n<dl class=\"figures\">\n\
         <div><dt>requests/s (1 min)</dt><dd data-stat=\"rate\">{rate:.2}</dd></div>\n\
         <div><dt>requests (15 min)</dt><dd data-stat=\"requests\">{}</dd></div>\n\
         <div><dt>4xx</dt><dd data-stat=\"status_4xx\">{}</dd></div>\n\
         <div><dt>5xx</dt><dd data-stat=\"status_5xx\">{}</dd></div>\n\
         <div><dt>refused by limits</dt><dd data-stat=\"refused\">{}</dd></div>\n\
         <div><dt>p50</dt><dd data-stat=\"p50\">{}</dd></div>\n\
         <div><dt>p99</dt><dd data-stat=\"p99\">{}</dd></div>\n</dl>\n",
        n("requests"),
        n("status_4xx"),
        n("status_5xx"),
        n("refused"),
        ms("p50_ms"),
        ms("p99_ms"),
        id = escape(id),
        title = escape(title),
    );
    let column = |key: &str, scale: f64| -> Vec<Option<f64>> {
        series
            .iter()
            .map(|s| s[key].as_f64().map(|v| v * scale))
            .collect()
    };
    let per_sec = 1.0 / SLOT_SECS as f64;
    out.push_str(&chart(
        &format!("{title}: requests per second, 4xx, 5xx and refusals per second"),
        "/s",
        &[
            ("requests", "#2563eb", column("requests", per_sec)),
            ("4xx", "#d97706", column("status_4xx", per_sec)),
            ("5xx", "#dc2626", column("status_5xx", per_sec)),
            ("refused", "#7c3aed", column("refused", per_sec)),
        ],
    ));
    out.push_str(&chart(
        &format!("{title}: latency p50 and p99 in milliseconds"),
        " ms",
        &[
            ("p50", "#059669", column("p50_ms", 1.0)),
            ("p99", "#be185d", column("p99_ms", 1.0)),
        ],
    ));
    out.push_str("</section>\n");
}

/// A line chart of several series over the same slots, as inline SVG (no script, no inline style:
/// colours are SVG attributes, which the CSP allows). A slot without a value breaks the line.
fn chart(label: &str, unit: &str, lines: &[(&str, &str, Vec<Option<f64>>)]) -> String {
    let max = lines
        .iter()
        .flat_map(|(_, _, values)| values.iter().flatten())
        .fold(0.0_f64, |a, b| a.max(*b));
    let top = if max > 0.0 { max * 1.1 } else { 1.0 };
    let slots = lines.first().map(|(_, _, v)| v.len()).unwrap_or(0).max(2);
    let x = |i: usize| i as f64 * WIDTH / (slots - 1) as f64;
    let y = |v: f64| HEIGHT - v / top * HEIGHT;
    let mut svg = format!(
        "<figure class=\"chart\">\n<svg viewBox=\"-2 -2 {} {}\" role=\"img\" aria-label=\"{}\" preserveAspectRatio=\"none\">\n\
         <title>{}</title>\n<rect x=\"0\" y=\"0\" width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"#fafafa\" stroke=\"#d4d4d8\"/>\n",
        WIDTH + 4.0,
        HEIGHT + 4.0,
        escape(label),
        escape(label)
    );
    for (_, colour, values) in lines {
        let mut segment = Vec::new();
        let flush = |segment: &mut Vec<String>, svg: &mut String| {
            if segment.len() == 1 {
                // A lone point: a dot, or it would not show.
                let _ = write!(
                    svg,
                    "<circle cx=\"{}\" r=\"2\" fill=\"{colour}\"/>",
                    segment[0].replace(',', "\" cy=\"")
                );
            } else if segment.len() > 1 {
                let _ = write!(
                    svg,
                    "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>",
                    segment.join(" ")
                );
            }
            segment.clear();
        };
        for (i, value) in values.iter().enumerate() {
            match value {
                Some(v) => segment.push(format!("{:.1},{:.1}", x(i), y(*v))),
                None => flush(&mut segment, &mut svg),
            }
        }
        flush(&mut segment, &mut svg);
        svg.push('\n');
    }
    svg.push_str("</svg>\n<figcaption>");
    let _ = write!(
        svg,
        "<span class=\"scale\">top: {}{unit}</span> ",
        format_number(top)
    );
    for (name, colour, _) in lines {
        let _ = write!(
            svg,
            "<span class=\"key\"><svg viewBox=\"0 0 10 10\" class=\"swatch\" aria-hidden=\"true\"><rect width=\"10\" height=\"10\" fill=\"{colour}\"/></svg>{}</span> ",
            escape(name)
        );
    }
    svg.push_str("<span class=\"axis\">15 min ago → now</span></figcaption>\n</figure>\n");
    svg
}

fn format_number(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The APIs of the running configuration, each with its targets and their health.
pub(super) async fn apis(gateway: &Gateway, live: &Live) -> Response<Body> {
    let list = api(gateway, Method::GET, "/apis", None).await;
    if !list.ok() {
        let notice = Notice::Error(list.error());
        return page_response(
            list.status,
            layout("APIs", Nav::Apis, live, Some(&notice), ""),
        );
    }
    let mut content = String::new();
    let empty = Vec::new();
    for def in list.body["apis"].as_array().unwrap_or(&empty) {
        let id = def["id"].as_str().unwrap_or("");
        let _ = write!(
            content,
            "<section class=\"api\" data-api=\"{}\">\n<h2>{}</h2>\n<dl class=\"definition\">\n",
            escape(id),
            cell(&def["name"])
        );
        for (label, key) in [
            ("id", "id"),
            ("listen path", "listen_path"),
            ("upstream", "upstream"),
            ("authentication", "auth"),
            ("authorization server", "oauth"),
            ("file", "file"),
        ] {
            let _ = writeln!(
                content,
                "<div><dt>{label}</dt><dd>{}</dd></div>",
                cell(&def[key])
            );
        }
        content.push_str("</dl>\n");
        if def["oauth"] == Value::Bool(true) {
            let _ = writeln!(
                content,
                "<p><a href=\"/ui/clients?api={}\">Clients of {}</a></p>",
                super::q(id),
                escape(id)
            );
        }
        let targets = api(
            gateway,
            Method::GET,
            &format!("/apis/{}/targets", seg(id)),
            None,
        )
        .await;
        if !targets.ok() {
            let _ = write!(
                content,
                "<p class=\"error\">Targets: {}</p>\n</section>\n",
                escape(&targets.error())
            );
            continue;
        }
        let _ = write!(
            content,
            "<table>\n<caption>Targets (balance: {})</caption>\n<thead><tr><th scope=\"col\">target</th><th scope=\"col\">weight</th><th scope=\"col\">healthy</th><th scope=\"col\">active check</th><th scope=\"col\">in flight</th><th scope=\"col\">ejections</th></tr></thead>\n<tbody>\n",
            cell(&targets.body["balance"])
        );
        for t in targets.body["targets"].as_array().unwrap_or(&empty) {
            let healthy = t["healthy"].as_bool().unwrap_or(false);
            let _ = writeln!(
                content,
                "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                cell(&t["url"]),
                cell(&t["weight"]),
                if healthy { "up" } else { "down" },
                if healthy { "yes" } else { "no" },
                cell(&t["active_check"]),
                cell(&t["in_flight"]),
                cell(&t["ejections"]),
            );
        }
        content.push_str("</tbody>\n</table>\n</section>\n");
    }
    page_response(
        StatusCode::OK,
        layout("APIs", Nav::Apis, live, None, &content),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_draws_lines_breaks_on_gaps_and_escapes_its_label() {
        let svg = chart(
            "a <b>",
            "/s",
            &[
                ("req", "#000", vec![Some(1.0), Some(2.0), None, Some(1.0)]),
                ("none", "#111", vec![None, None, None, None]),
            ],
        );
        assert!(svg.contains("aria-label=\"a &lt;b&gt;\""));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert_eq!(svg.matches("<circle").count(), 1);
        assert!(!svg.contains("style="));
        assert!(svg.contains("top: 2.2/s"));
    }
}
