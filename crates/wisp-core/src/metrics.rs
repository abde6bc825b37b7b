//! The node's metrics: one `prometheus-client` registry that every
//! component registers a collector with (the engine's functions,
//! capacity and queue; the gateway's routes; the S3 API; the KV store),
//! encoded in Prometheus' text format for `/metrics`. Components keep
//! their counters as plain atomics on their own structures (the request
//! path takes no lock) and describe them here at scrape time.

pub use prometheus_client::collector::Collector;
pub use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::encoding::NoLabelSet;
use prometheus_client::metrics::MetricType;
pub use prometheus_client::registry::Registry;
use std::fmt;

/// A sample's labels, in order.
pub type Labels<'a> = Vec<(&'static str, &'a str)>;

fn family<'a, V>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (Labels<'a>, V)>,
    mut one: impl FnMut(&mut prometheus_client::encoding::MetricEncoder, &V) -> fmt::Result,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in samples {
        if labels.is_empty() {
            one(&mut m, &v)?;
        } else {
            one(&mut m.encode_family(&labels)?, &v)?;
        }
    }
    Ok(())
}

/// A counter family: `name` without `_total` (the encoder adds it).
pub fn counter<'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels<'a>, u64)>,
) -> fmt::Result {
    family(enc, name, help, MetricType::Counter, samples, |m, v| {
        m.encode_counter::<NoLabelSet, u64, u64>(v, None)
    })
}

/// A gauge family.
pub fn gauge<'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels<'a>, i64)>,
) -> fmt::Result {
    family(enc, name, help, MetricType::Gauge, samples, |m, v| {
        m.encode_gauge(v)
    })
}

/// A histogram's state: the sum, the count, and each bucket's upper
/// bound with the observations at most that (cumulative, as they are
/// counted).
pub struct HistogramSample {
    pub sum: f64,
    pub count: u64,
    pub cumulative: Vec<(f64, u64)>,
}

/// A histogram family.
pub fn histogram<'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels<'a>, HistogramSample)>,
) -> fmt::Result {
    family(enc, name, help, MetricType::Histogram, samples, |m, h| {
        // The encoder takes each bucket's own count and sums them up.
        let mut prev = 0;
        let own: Vec<(f64, u64)> = h
            .cumulative
            .iter()
            .map(|&(b, c)| {
                let n = c.saturating_sub(prev);
                prev = c;
                (b, n)
            })
            .collect();
        m.encode_histogram::<NoLabelSet>(h.sum, h.count, &own, None)
    })
}

/// The registry in Prometheus' text format (0.0.4).
pub fn encode(registry: &Registry) -> String {
    let mut out = String::with_capacity(8192);
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, registry);
    out
}

/// Makes a collector of a closure (for a component's metrics).
pub struct FnCollector<F>(pub &'static str, pub F);

impl<F> fmt::Debug for FnCollector<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FnCollector({})", self.0)
    }
}

impl<F> Collector for FnCollector<F>
where
    F: Fn(&mut DescriptorEncoder) -> fmt::Result + Send + Sync + 'static,
{
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        (self.1)(&mut encoder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_encode_as_prometheus_text() {
        let mut r = Registry::default();
        r.register_collector(Box::new(FnCollector("t", |e: &mut DescriptorEncoder| {
            counter(
                e,
                "wisp_things",
                "Things.",
                [(vec![("route", "GET /a \"b\"")], 3)],
            )?;
            gauge(e, "wisp_depth", "Depth.", [(Vec::new(), 5)])?;
            histogram(
                e,
                "wisp_seconds",
                "Time.",
                [(
                    vec![("f", "x")],
                    HistogramSample {
                        sum: 0.5,
                        count: 3,
                        cumulative: vec![(0.1, 1), (1.0, 3)],
                    },
                )],
            )
        })));
        let text = encode(&r);
        assert!(
            text.contains("# TYPE wisp_things_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("wisp_things_total{route=\"GET /a \\\"b\\\"\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("wisp_depth 5\n"), "{text}");
        assert!(
            text.contains("wisp_seconds_bucket{f=\"x\",le=\"0.1\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("wisp_seconds_bucket{f=\"x\",le=\"1\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("wisp_seconds_bucket{f=\"x\",le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("wisp_seconds_count{f=\"x\"} 3\n"), "{text}");
    }
}
