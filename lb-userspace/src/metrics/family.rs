//! Building Prometheus metric families by hand, for values read at scrape time (kernel
//! counters, proxy atomics) rather than held in the prometheus crate's own metric types.

use prometheus::proto::{self, LabelPair, Metric, MetricFamily, MetricType};

/// A family under construction.
pub struct Family(MetricFamily);

impl Family {
    pub fn counter(name: &str, help: &str) -> Self {
        Self::new(name, help, MetricType::COUNTER)
    }

    pub fn gauge(name: &str, help: &str) -> Self {
        Self::new(name, help, MetricType::GAUGE)
    }

    pub fn histogram(name: &str, help: &str) -> Self {
        Self::new(name, help, MetricType::HISTOGRAM)
    }

    fn new(name: &str, help: &str, kind: MetricType) -> Self {
        let mut family = MetricFamily::default();
        family.set_name(name.to_string());
        family.set_help(help.to_string());
        family.set_field_type(kind);
        Self(family)
    }

    /// Adds a counter sample.
    pub fn count(&mut self, labels: &[(&str, &str)], value: u64) {
        let mut counter = proto::Counter::default();
        counter.set_value(value as f64);
        let mut metric = Metric::from_label(label_pairs(labels));
        metric.set_counter(counter);
        self.0.mut_metric().push(metric);
    }

    /// Adds a gauge sample.
    pub fn set(&mut self, labels: &[(&str, &str)], value: f64) {
        let mut gauge = proto::Gauge::default();
        gauge.set_value(value);
        let mut metric = Metric::from_label(label_pairs(labels));
        metric.set_gauge(gauge);
        self.0.mut_metric().push(metric);
    }

    /// Adds a histogram sample: cumulative counts per upper bound (seconds), the `+Inf`
    /// count, and the sum (seconds).
    pub fn observe(
        &mut self,
        labels: &[(&str, &str)],
        buckets: &[(f64, u64)],
        count: u64,
        sum: f64,
    ) {
        let mut histogram = proto::Histogram::default();
        histogram.set_sample_count(count);
        histogram.set_sample_sum(sum);
        let mut proto_buckets = Vec::with_capacity(buckets.len());
        for (bound, cumulative) in buckets {
            let mut bucket = proto::Bucket::default();
            bucket.set_upper_bound(*bound);
            bucket.set_cumulative_count(*cumulative);
            proto_buckets.push(bucket);
        }
        histogram.set_bucket(proto_buckets);
        let mut metric = Metric::from_label(label_pairs(labels));
        metric.set_histogram(histogram);
        self.0.mut_metric().push(metric);
    }

    /// The family, or `None` when it has no samples (Prometheus rejects empty families).
    pub fn finish(self) -> Option<MetricFamily> {
        (!self.0.get_metric().is_empty()).then_some(self.0)
    }
}

fn label_pairs(labels: &[(&str, &str)]) -> Vec<LabelPair> {
    labels
        .iter()
        .map(|(name, value)| {
            let mut pair = LabelPair::default();
            pair.set_name((*name).to_string());
            pair.set_value((*value).to_string());
            pair
        })
        .collect()
}

/// Descriptors naming a collector's families. The registry tells collectors apart by their
/// descriptors, so each collector must declare at least one that no other declares.
pub fn descs(names: &[&str]) -> Vec<prometheus::core::Desc> {
    names
        .iter()
        .filter_map(|name| {
            prometheus::core::Desc::new(
                (*name).to_string(),
                "Collected at scrape time.".into(),
                Vec::new(),
                std::collections::HashMap::new(),
            )
            .ok()
        })
        .collect()
}
