//! A tiny parser of the Prometheus text exposition format, enough for Envoy's
//! `/stats/prometheus`: samples `name{label="value",...} number`, comments skipped.

use std::collections::BTreeMap;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name.
    pub name: String,
    /// Labels, sorted by name.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// True when every `(name, value)` in `filter` is a label of this sample with that value.
    pub fn matches(&self, filter: &[(&str, &str)]) -> bool {
        filter
            .iter()
            .all(|(k, v)| self.labels.get(*k).is_some_and(|have| have == v))
    }
}

/// All samples of one scrape.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Samples in the order they were printed.
    pub samples: Vec<Sample>,
}

impl Metrics {
    /// Parses the text; lines that are not samples are skipped.
    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(parse_line)
            .collect();
        Self { samples }
    }

    /// The value of the sample named `name` whose label set is exactly `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels.len() == labels.len() && s.matches(labels))
            .map(|s| s.value)
    }

    /// Sum over all samples named `name` that carry the labels in `filter` (other labels
    /// may differ). `None` when no sample matches.
    pub fn sum(&self, name: &str, filter: &[(&str, &str)]) -> Option<f64> {
        let mut it = self.matching(name, filter).peekable();
        it.peek()?;
        Some(it.map(|s| s.value).sum())
    }

    /// The samples named `name` that carry the labels in `filter`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        filter: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples
            .iter()
            .filter(move |s| s.name == name && s.matches(filter))
    }

    /// Number of samples whose name starts with `prefix`.
    pub fn count_prefix(&self, prefix: &str) -> usize {
        self.samples
            .iter()
            .filter(|s| s.name.starts_with(prefix))
            .count()
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at_checked(i)?,
        None => return None,
    };
    let (labels, rest) = if let Some(after_brace) = rest.strip_prefix('{') {
        parse_labels(after_brace)?
    } else {
        (BTreeMap::new(), rest)
    };
    // The value, then an optional timestamp.
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Parses `a="x",b="y"}` and returns the labels and what follows the closing brace.
fn parse_labels(mut s: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        let eq = s.find('=')?;
        let (key, after) = s.split_at_checked(eq)?;
        let after = after.strip_prefix("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.insert(key.trim().to_string(), value);
        s = after.get(end + 1..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# TYPE vigil_requests_total counter
vigil_requests_total{route="checkout",cluster="stable"} 80
vigil_requests_total{route="checkout",cluster="canary"} 20
vigil_requests_total{route="other",cluster="stable"} 5
# TYPE vigil_series gauge
vigil_series 3
weird{a="q\"uote\\d",b="x,y}z"} 1.5 1700000000
envoy_cluster_upstream_rq{envoy_response_code="200",envoy_cluster_name="stable"} 7
"#;

    #[test]
    fn parses_values_and_sums() {
        let m = Metrics::parse(TEXT);
        assert_eq!(
            m.value(
                "vigil_requests_total",
                &[("route", "checkout"), ("cluster", "canary")]
            ),
            Some(20.0)
        );
        assert_eq!(
            m.sum("vigil_requests_total", &[("route", "checkout")]),
            Some(100.0)
        );
        assert_eq!(m.sum("vigil_requests_total", &[]), Some(105.0));
        assert_eq!(m.value("vigil_series", &[]), Some(3.0));
        assert_eq!(
            m.value("vigil_requests_total", &[("route", "checkout")]),
            None
        );
        assert_eq!(m.sum("absent_metric", &[]), None);
        assert_eq!(m.count_prefix("vigil_"), 4);
    }

    #[test]
    fn unescapes_label_values() {
        let m = Metrics::parse(TEXT);
        assert_eq!(
            m.value("weird", &[("a", "q\"uote\\d"), ("b", "x,y}z")]),
            Some(1.5)
        );
    }

    #[test]
    fn skips_garbage() {
        let m = Metrics::parse("no_value\n{broken 1\nok 2\nbad{a=\"x\" 3\n");
        assert_eq!(m.samples.len(), 1);
        assert_eq!(m.value("ok", &[]), Some(2.0));
    }
}
