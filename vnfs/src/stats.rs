//! Statistics as the stages, the drivers and the dataplane describe them,
//! and the two places they go.
//!
//! Whoever keeps counters reports them to a [`StatsSink`]: first the
//! object they belong to (a port, a stage, a backend: a kind and labels),
//! then its counters and gauges with a help text each. The console's
//! `stats` text ([`TextSink`]) and the Prometheus exposition ([`PromSink`])
//! are two sinks over the same calls; nothing parses the other's output.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write as _;

/// Where counters go.
pub trait StatsSink {
    /// Starts the record of one object: `kind` is the family prefix
    /// (`port`, `stage`, `lb_backend`), `labels` tell which one.
    fn object(&mut self, kind: &str, labels: &[(&str, &str)]);
    /// A running total.
    fn counter(&mut self, name: &str, help: &str, value: u64);
    /// A level (table fill, capacity, a state).
    fn gauge(&mut self, name: &str, help: &str, value: u64);
    /// Packets dropped for `reason` (only non-zero ones are reported).
    fn drops(&mut self, reason: &str, value: u64);
    /// A descriptive value for people (an address): the console shows it,
    /// Prometheus has no place for it.
    fn text(&mut self, _key: &str, _value: &str) {}
}

/// The console's `stats` lines: one line per object, `WORD LABEL=V
/// key=value ...`, where WORD is `stats` for ports and the kind (with `-`)
/// otherwise, and LABEL is `port=` for ports and NICs and `name=` (label
/// values joined by `/`) for the rest.
#[derive(Default)]
pub struct TextSink {
    pub out: String,
    open: bool,
}

impl TextSink {
    /// The text, with the last line ended.
    pub fn finish(mut self) -> String {
        if self.open {
            self.out.push('\n');
        }
        self.out
    }
}

impl StatsSink for TextSink {
    fn object(&mut self, kind: &str, labels: &[(&str, &str)]) {
        if self.open {
            self.out.push('\n');
        }
        self.open = true;
        let word = if kind == "port" { "stats" } else { kind };
        for (i, part) in word.split('_').enumerate() {
            if i > 0 {
                self.out.push('-');
            }
            self.out.push_str(part);
        }
        let key = match labels.first() {
            Some(("port", _)) => "port",
            _ => "name",
        };
        if !labels.is_empty() {
            let _ = write!(self.out, " {key}=");
            for (i, (_, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push('/');
                }
                self.out.push_str(v);
            }
        }
    }

    fn counter(&mut self, name: &str, _: &str, value: u64) {
        let _ = write!(self.out, " {name}={value}");
    }

    fn gauge(&mut self, name: &str, _: &str, value: u64) {
        let _ = write!(self.out, " {name}={value}");
    }

    fn drops(&mut self, reason: &str, value: u64) {
        if value != 0 {
            let _ = write!(self.out, " drop_{reason}={value}");
        }
    }

    fn text(&mut self, key: &str, value: &str) {
        let _ = write!(self.out, " {key}={value}");
    }
}

/// The Prometheus text exposition format (version 0.0.4): one family per
/// counter name, `sluice_KIND_NAME_total` for counters and
/// `sluice_KIND_NAME` for gauges, with `# HELP` and `# TYPE` once each and
/// the object's labels on every sample.
#[derive(Default)]
pub struct PromSink {
    /// Families in the order first seen: (name, type, help, samples).
    families: Vec<(String, &'static str, String, Vec<String>)>,
    index: BTreeMap<String, usize>,
    kind: String,
    labels: String,
}

impl PromSink {
    fn sample(&mut self, family: String, kind: &'static str, help: &str, extra: Option<(&str, &str)>, value: u64) {
        let mut labels = self.labels.clone();
        if let Some((k, v)) = extra {
            if !labels.is_empty() {
                labels.push(',');
            }
            let _ = write!(labels, "{k}=\"{}\"", Escaped(v));
        }
        let sample = if labels.is_empty() {
            alloc::format!("{family} {value}")
        } else {
            alloc::format!("{family}{{{labels}}} {value}")
        };
        match self.index.get(&family) {
            Some(&i) => self.families[i].3.push(sample),
            None => {
                self.index.insert(family.clone(), self.families.len());
                self.families.push((family, kind, help.into(), alloc::vec![sample]));
            }
        }
    }

    /// The exposition text.
    pub fn finish(self) -> String {
        let mut out = String::new();
        for (name, kind, help, samples) in self.families {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for s in samples {
                out.push_str(&s);
                out.push('\n');
            }
        }
        out
    }
}

impl StatsSink for PromSink {
    fn object(&mut self, kind: &str, labels: &[(&str, &str)]) {
        self.kind.clear();
        self.kind.push_str(kind);
        self.labels.clear();
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                self.labels.push(',');
            }
            let _ = write!(self.labels, "{k}=\"{}\"", Escaped(v));
        }
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        let family = alloc::format!("sluice_{}_{name}_total", self.kind);
        self.sample(family, "counter", help, None, value);
    }

    fn gauge(&mut self, name: &str, help: &str, value: u64) {
        let family = alloc::format!("sluice_{}_{name}", self.kind);
        self.sample(family, "gauge", help, None, value);
    }

    fn drops(&mut self, reason: &str, value: u64) {
        if value != 0 {
            let family = alloc::format!("sluice_{}_drops_total", self.kind);
            self.sample(family, "counter", "packets dropped, by reason", Some(("reason", reason)), value);
        }
    }
}

/// A label value with `\`, `"` and newlines escaped.
struct Escaped<'a>(&'a str);

impl core::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// One named value, as a driver or the poll loop hands it over (vnfs knows
/// no driver: they copy their counters in as samples).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub name: &'static str,
    pub help: &'static str,
    /// A level, not a running total.
    pub gauge: bool,
    pub value: u64,
}

impl Sample {
    pub fn report(&self, sink: &mut dyn StatsSink) {
        if self.gauge {
            sink.gauge(self.name, self.help, self.value)
        } else {
            sink.counter(self.name, self.help, self.value)
        }
    }
}

/// Declares a counter struct once: its fields with a kind (`counter` or
/// `gauge`) and a help text each, and `samples()`/`report()` that hand
/// every field on, so no list of names is kept anywhere else.
///
/// ```ignore
/// vnfs::counters! { pub struct NicStats { rx_kicks: counter "device notifications" } }
/// ```
#[macro_export]
macro_rules! counters {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* $field:ident : $kind:ident $help:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $name { $($(#[$fm])* pub $field: u64),* }

        impl $name {
            /// Every field as a named sample.
            pub fn samples(&self) -> impl Iterator<Item = $crate::stats::Sample> {
                [$($crate::stats::Sample {
                    name: stringify!($field),
                    help: $help,
                    gauge: $crate::counters!(@gauge $kind),
                    value: self.$field,
                }),*].into_iter()
            }

            /// Reports every field to `sink`, under the object already opened.
            pub fn report(&self, sink: &mut dyn $crate::stats::StatsSink) {
                for s in self.samples() {
                    s.report(sink);
                }
            }
        }
    };
    (@gauge counter) => { false };
    (@gauge gauge) => { true };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(f: impl Fn(&mut dyn StatsSink)) -> (String, String) {
        let mut t = TextSink::default();
        f(&mut t);
        let mut p = PromSink::default();
        f(&mut p);
        (t.finish(), p.finish())
    }

    #[test]
    fn one_report_makes_the_console_line_and_the_prometheus_families() {
        let (text, prom) = both(|s| {
            for port in ["lan", "wan"] {
                s.object("port", &[("port", port)]);
                s.counter("rx_packets", "packets received", 3);
                s.drops("no_route", if port == "lan" { 2 } else { 0 });
            }
            s.object("lb_backend", &[("service", "web"), ("backend", "10.0.0.2:80")]);
            s.text("vip", "10.9.0.1:80");
            s.gauge("healthy", "1 if the backend passes its checks", 1);
        });
        assert_eq!(
            text,
            "stats port=lan rx_packets=3 drop_no_route=2\nstats port=wan rx_packets=3\n\
             lb-backend name=web/10.0.0.2:80 vip=10.9.0.1:80 healthy=1\n"
        );
        assert_eq!(
            prom,
            "# HELP sluice_port_rx_packets_total packets received\n\
             # TYPE sluice_port_rx_packets_total counter\n\
             sluice_port_rx_packets_total{port=\"lan\"} 3\n\
             sluice_port_rx_packets_total{port=\"wan\"} 3\n\
             # HELP sluice_port_drops_total packets dropped, by reason\n\
             # TYPE sluice_port_drops_total counter\n\
             sluice_port_drops_total{port=\"lan\",reason=\"no_route\"} 2\n\
             # HELP sluice_lb_backend_healthy 1 if the backend passes its checks\n\
             # TYPE sluice_lb_backend_healthy gauge\n\
             sluice_lb_backend_healthy{service=\"web\",backend=\"10.0.0.2:80\"} 1\n"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let (_, prom) = both(|s| {
            s.object("stage", &[("stage", "a\"b\\c")]);
            s.gauge("x", "h", 1);
        });
        assert!(prom.contains("sluice_stage_x{stage=\"a\\\"b\\\\c\"} 1"), "{prom}");
    }
}
