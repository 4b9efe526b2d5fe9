//! The daemon's `/metrics` exposition: OpenMetrics text written by `prometheus-client`.
//!
//! Owns the helpers every part's collector writes its families with, the exposition of a
//! registry as one document, and the two families that belong to no part: `mecgw_build_info`
//! and the `process_*` metrics ([`process`]). Never keeps values of its own: every collector
//! reads the live state (atomics, snapshots, kernel maps) when it is scraped.
//!
//! Names: a counter is registered without its `_total` (prometheus-client appends it), so the
//! helpers take the exposed name, `_total` included, which is what dashboards, alerts and
//! `grep` look for. No family carries an OpenMetrics unit (`# UNIT`): the unit is already
//! the last word of the name (`_bytes`, `_seconds`), and a unit would be appended again.

use std::fmt;

use prometheus_client::{
    collector::Collector,
    encoding::{
        DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeLabelSet, EncodeMetric as _,
    },
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

pub mod process;

/// The content type of [`encode`]'s document.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every collector of `registry`, as one OpenMetrics document (ending in `# EOF`).
pub fn encode(registry: &Registry) -> Result<String, fmt::Error> {
    let mut out = String::with_capacity(16 * 1024);
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

/// `collector` alone, as an OpenMetrics document: what a part's own tests read.
pub fn encode_collector(collector: impl Collector) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(collector));
    // Writing into a String cannot fail, and our collectors return no error of their own.
    encode(&registry).unwrap_or_default()
}

/// The family name of the exposed counter `name`: without the `_total` that prometheus-client
/// appends to every counter sample.
fn counter_family(name: &str) -> &str {
    debug_assert!(
        name.ends_with("_total"),
        "counter {name} must end in _total"
    );
    name.strip_suffix("_total").unwrap_or(name)
}

/// One counter without labels; `name` as exposed (`…_total`).
pub fn counter<N: EncodeCounterValue>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: N,
) -> fmt::Result {
    let m = e.encode_descriptor(counter_family(name), help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(m)
}

/// A counter family, one series per label set; `name` as exposed (`…_total`).
pub fn counters<L: EncodeLabelSet>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut m = e.encode_descriptor(counter_family(name), help, None, MetricType::Counter)?;
    for (labels, value) in series {
        ConstCounter::new(value).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// One gauge without labels.
pub fn gauge<N: EncodeGaugeValue>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: N,
) -> fmt::Result {
    let m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(m)
}

/// A gauge family, one series per label set.
pub fn gauges<L: EncodeLabelSet, N: EncodeGaugeValue>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, N)>,
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in series {
        ConstGauge::new(value).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// An info family with one series (value 1); `name` as exposed (`…_info`).
pub fn info<L: EncodeLabelSet>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    labels: &L,
) -> fmt::Result {
    debug_assert!(name.ends_with("_info"), "info {name} must end in _info");
    let family = name.strip_suffix("_info").unwrap_or(name);
    let mut m = e.encode_descriptor(family, help, None, MetricType::Info)?;
    m.encode_info(labels)
}

/// `mecgw_build_info{version}`: which build runs. The version is the crate's; a git commit is
/// not included because builds from a source tarball have none.
#[derive(Debug, Default, Clone, Copy)]
pub struct BuildInfo;

impl Collector for BuildInfo {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        info(
            &mut e,
            "mecgw_build_info",
            "The mecgw build that runs, by version.",
            &[("version", env!("CARGO_PKG_VERSION"))],
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[derive(Debug)]
    struct Sample;

    impl Collector for Sample {
        fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
            counter(&mut e, "t_frames_total", "Frames.", 7u64)?;
            counters(
                &mut e,
                "t_bytes_total",
                "Bytes by direction.",
                [
                    ([("direction", "uplink")], 1),
                    ([("direction", "down\"link")], 2),
                ],
            )?;
            gauge(&mut e, "t_ratio", "A ratio.", 0.5)?;
            gauges(
                &mut e,
                "t_rules",
                "Rules by id.",
                [([("rule", 10u32)], 3u64)],
            )?;
            Ok(())
        }
    }

    #[test]
    fn counters_keep_their_exposed_name_and_the_document_ends_in_eof() {
        let mut r = Registry::default();
        r.register_collector(Box::new(Sample));
        r.register_collector(Box::new(BuildInfo));
        let text = encode(&r).unwrap();
        let want = format!(
            "# HELP t_frames Frames.\n\
             # TYPE t_frames counter\n\
             t_frames_total 7\n\
             # HELP t_bytes Bytes by direction.\n\
             # TYPE t_bytes counter\n\
             t_bytes_total{{direction=\"uplink\"}} 1\n\
             t_bytes_total{{direction=\"down\\\"link\"}} 2\n\
             # HELP t_ratio A ratio.\n\
             # TYPE t_ratio gauge\n\
             t_ratio 0.5\n\
             # HELP t_rules Rules by id.\n\
             # TYPE t_rules gauge\n\
             t_rules{{rule=\"10\"}} 3\n\
             # HELP mecgw_build The mecgw build that runs, by version.\n\
             # TYPE mecgw_build info\n\
             mecgw_build_info{{version=\"{}\"}} 1\n\
             # EOF\n",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(text, want);
    }
}
