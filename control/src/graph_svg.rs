//! `GET /v1/graph?format=svg`: the dependency map as a self-contained SVG,
//! laid out by hand — no Graphviz at run time:
//!
//! - nodes are services (and callers without a service, as rounded pills);
//!   each sits in a column by its longest call depth from a caller nobody
//!   calls (cycles are cut after as many rounds as there are nodes), rows in
//!   name order;
//! - one arrow per (caller, service) pair, labelled with requests, errors
//!   and p99, and up to three `METHOD template` lines (`+N more`); red when
//!   it carried errors; a call back to the same or an earlier column is
//!   drawn as a curve below the nodes;
//! - every text is XML-escaped; at most [`MAX_NODES`] nodes are drawn (the
//!   rest are counted in the title), so the size stays bounded.

use crate::graph::EdgeView;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// Most nodes drawn.
pub const MAX_NODES: usize = 200;
const COL_W: f64 = 300.0;
const ROW_H: f64 = 110.0;
const NODE_W: f64 = 190.0;
const NODE_H: f64 = 44.0;
const PAD: f64 = 30.0;

/// XML-escape `s` (text and attribute values).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
    t.push('…');
    t
}

#[derive(Default)]
struct Pair {
    requests: u64,
    errors: u64,
    p99_ms: Option<f64>,
    ops: BTreeSet<String>,
}

/// The SVG document of `edges`.
pub fn svg(edges: &[EdgeView]) -> String {
    let mut pairs: BTreeMap<(String, String), Pair> = BTreeMap::new();
    let mut callers_only = BTreeSet::new();
    for e in edges {
        let from = e.source_service.clone().unwrap_or_else(|| {
            callers_only.insert(e.source.clone());
            e.source.clone()
        });
        let p = pairs.entry((from, e.service.clone())).or_default();
        p.requests += e.requests;
        p.errors += e.errors;
        if let Some(q) = e.quantile_ms(0.99) {
            p.p99_ms = Some(p.p99_ms.map_or(q, |x: f64| x.max(q)));
        }
        p.ops.insert(format!("{} {}", e.method, e.path));
    }
    let mut names: BTreeSet<String> = BTreeSet::new();
    for (f, t) in pairs.keys() {
        names.insert(f.clone());
        names.insert(t.clone());
    }
    let total = names.len();
    let names: Vec<String> = names.into_iter().take(MAX_NODES).collect();
    let drawn: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    // Longest depth from the roots, cut after `n` rounds (cycles).
    let mut depth: BTreeMap<&str, usize> = names.iter().map(|n| (n.as_str(), 0)).collect();
    for _ in 0..names.len() {
        let mut changed = false;
        for (f, t) in pairs.keys() {
            if f == t || !drawn.contains(f.as_str()) || !drawn.contains(t.as_str()) {
                continue;
            }
            let d = depth.get(f.as_str()).copied().unwrap_or(0) + 1;
            if let Some(slot) = depth.get_mut(t.as_str()) {
                if *slot < d && d < names.len() {
                    *slot = d;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    let mut rows: BTreeMap<usize, usize> = BTreeMap::new();
    let mut pos: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for n in &names {
        let col = depth.get(n.as_str()).copied().unwrap_or(0);
        let row = rows.entry(col).or_insert(0);
        pos.insert(
            n,
            (PAD + col as f64 * COL_W, PAD + 20.0 + *row as f64 * ROW_H),
        );
        *row += 1;
    }
    let cols = rows.keys().max().map_or(1, |c| c + 1);
    let max_rows = rows.values().max().copied().unwrap_or(1);
    let width = PAD * 2.0 + (cols as f64 - 1.0) * COL_W + NODE_W;
    let height = PAD * 2.0 + 20.0 + max_rows as f64 * ROW_H + 60.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\" font-family=\"sans-serif\" font-size=\"11\">"
    );
    let _ = writeln!(
        out,
        "<title>Vigil dependency map: {} nodes ({} drawn), {} caller→service pairs</title>",
        total,
        names.len(),
        pairs.len()
    );
    out.push_str("<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#555\"/></marker></defs>\n");
    out.push_str("<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
    for ((f, t), p) in &pairs {
        let (Some(&(fx, fy)), Some(&(tx, ty))) = (pos.get(f.as_str()), pos.get(t.as_str())) else {
            continue;
        };
        let colour = if p.errors > 0 { "#c0392b" } else { "#555" };
        let (x1, y1) = (fx + NODE_W, fy + NODE_H / 2.0);
        let (x2, y2) = (tx, ty + NODE_H / 2.0);
        let (d, lx, ly) = if tx > fx {
            (
                format!("M{x1:.1},{y1:.1} L{x2:.1},{y2:.1}"),
                (x1 + x2) / 2.0,
                (y1 + y2) / 2.0,
            )
        } else {
            // Back or same-column call: a curve below both nodes.
            let (sx, sy) = (fx + NODE_W / 2.0, fy + NODE_H);
            let (ex, ey) = (tx + NODE_W / 2.0, ty + NODE_H);
            let low = sy.max(ey) + ROW_H * 0.45;
            (
                format!("M{sx:.1},{sy:.1} C{sx:.1},{low:.1} {ex:.1},{low:.1} {ex:.1},{ey:.1}"),
                (sx + ex) / 2.0,
                low - 8.0,
            )
        };
        let _ = writeln!(
            out,
            "<g class=\"edge\" data-from=\"{}\" data-to=\"{}\"><path d=\"{d}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" marker-end=\"url(#arrow)\"/>",
            escape(f),
            escape(t)
        );
        let mut lines = vec![format!(
            "{} req, {} err{}",
            p.requests,
            p.errors,
            p.p99_ms
                .map(|q| format!(", p99 {q:.1} ms"))
                .unwrap_or_default()
        )];
        lines.extend(p.ops.iter().take(3).map(|o| short(o, 40)));
        if p.ops.len() > 3 {
            lines.push(format!("+{} more", p.ops.len() - 3));
        }
        let top = ly - 6.0 - 12.0 * (lines.len() as f64 - 1.0) / 2.0;
        for (i, l) in lines.iter().enumerate() {
            let _ = writeln!(
                out,
                "<text x=\"{lx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"{colour}\">{}</text>",
                top + 12.0 * i as f64,
                escape(l)
            );
        }
        out.push_str("</g>\n");
    }
    for n in &names {
        let Some(&(x, y)) = pos.get(n.as_str()) else {
            continue;
        };
        let caller = callers_only.contains(n);
        let rx = if caller { NODE_H / 2.0 } else { 6.0 };
        let fill = if caller { "#eef3fb" } else { "#f7f7f7" };
        let _ = writeln!(
            out,
            "<g class=\"node\" data-name=\"{}\"><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{NODE_W}\" height=\"{NODE_H}\" rx=\"{rx}\" fill=\"{fill}\" stroke=\"#333\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"12\">{}</text></g>",
            escape(n),
            x + NODE_W / 2.0,
            y + NODE_H / 2.0 + 4.0,
            escape(&short(n.rsplit('/').next().unwrap_or(n), 28))
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn e(
        source: &str,
        source_service: Option<&str>,
        service: &str,
        path: &str,
        errors: u64,
    ) -> EdgeView {
        EdgeView {
            source: source.into(),
            source_service: source_service.map(str::to_string),
            service: service.into(),
            version: "v1".into(),
            method: "GET".into(),
            path: path.into(),
            requests: 10,
            errors,
            status_4xx: 0,
            denied: 0,
            latency: vec![(vigil_scorer::histogram::bucket_index(2_000), 10)],
            rate_rps: 1.0,
            first_seen_ms: 0,
            last_seen_ms: 1,
            observed_by: "inbound",
            reporters: vec![],
            ttft: vec![],
            streamed: 0,
            by_reporter: vec![],
        }
    }

    #[test]
    fn well_formed_columns_by_depth_escaped_and_cycles_curved() {
        let edges = vec![
            e(
                "spiffe://td/ns/shop/sa/web",
                Some("web"),
                "orders",
                "/v1/orders/{id}",
                0,
            ),
            e(
                "spiffe://td/ns/shop/sa/orders",
                Some("orders"),
                "payments",
                "/v1/charges",
                2,
            ),
            // A cycle back to orders, and a caller with a hostile name.
            e(
                "spiffe://td/ns/shop/sa/payments",
                Some("payments"),
                "orders",
                "/v1/refunds",
                0,
            ),
            e("<script>&\"x\"", None, "web", "/a<b>", 0),
        ];
        let s = svg(&edges);
        let doc = roxmltree::Document::parse(&s).unwrap();
        let nodes: Vec<_> = doc
            .descendants()
            .filter(|n| n.attribute("class") == Some("node"))
            .collect();
        let names: Vec<&str> = nodes
            .iter()
            .filter_map(|n| n.attribute("data-name"))
            .collect();
        assert_eq!(names.len(), 4, "{names:?}");
        assert!(names.contains(&"<script>&\"x\""));
        let x_of = |name: &str| {
            let g = nodes
                .iter()
                .find(|n| n.attribute("data-name") == Some(name))
                .unwrap();
            let rect = g.children().find(|c| c.has_tag_name("rect")).unwrap();
            rect.attribute("x").unwrap().parse::<f64>().unwrap()
        };
        assert!(x_of("<script>&\"x\"") < x_of("web"));
        assert!(x_of("web") < x_of("orders"));
        assert!(x_of("orders") < x_of("payments"));
        let edges_g: Vec<_> = doc
            .descendants()
            .filter(|n| n.attribute("class") == Some("edge"))
            .collect();
        assert_eq!(edges_g.len(), 4);
        let path_of = |from: &str| {
            let g = edges_g
                .iter()
                .find(|n| n.attribute("data-from") == Some(from))
                .unwrap();
            g.children().find(|c| c.has_tag_name("path")).unwrap()
        };
        assert!(
            path_of("payments").attribute("d").unwrap().contains('C'),
            "back edge curves"
        );
        assert_eq!(
            path_of("orders").attribute("stroke"),
            Some("#c0392b"),
            "errors in red"
        );
        let texts: String = doc
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text())
            .collect::<Vec<_>>()
            .join("|");
        assert!(texts.contains("GET /v1/orders/{id}"), "{texts}");
        assert!(texts.contains("10 req, 2 err"), "{texts}");
        assert!(texts.contains("GET /a<b>"), "{texts}");
    }

    #[test]
    fn empty_graph_is_still_a_document() {
        let s = svg(&[]);
        assert!(roxmltree::Document::parse(&s).is_ok(), "{s}");
    }
}
