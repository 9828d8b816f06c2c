//! `show`: the appliance's state as aligned text, for `GET /show/WHAT`
//! (and `sluice show`) and the console's `show WHAT`. The framework's own
//! views (ports, neighbors, routes, stages) are here; a stage answers for
//! its own (the NAT's sessions, the load balancer's backends).

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write as _;

use super::Dataplane;
use crate::config::fmt_mac;
use crate::Micros;

/// The views the framework has; stages add theirs.
pub const VIEWS: &[&str] = &["ports", "neighbors", "routes", "stages", "tunnels"];

/// Most rows one page of `show neighbors` holds.
pub const NEIGHBOR_PAGE: usize = 1000;

/// The views stages answer for (the NAT's sessions, the load balancer's
/// backends and flows): with `VIEWS`, the one list help texts print.
pub const STAGE_VIEWS: &[&str] = &["sessions", "backends", "flows"];

/// Every view, as help texts and a bare `show` say it.
pub fn views_help() -> String {
    alloc::format!("{} or a stage's ({})", VIEWS.join(", "), STAGE_VIEWS.join(", "))
}

/// The length of `d` as text, without allocating: a column as wide as its
/// widest value, so IPv6 rows line up with the IPv4 ones.
fn text_len(d: impl core::fmt::Display) -> usize {
    struct Count(usize);
    impl core::fmt::Write for Count {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            self.0 += s.len();
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = write!(c, "{d}");
    c.0
}

/// `key=value&key=value` pairs of a query string (bounded: 16 pairs).
pub fn query_pairs(q: &str) -> Vec<(&str, &str)> {
    q.split('&').filter_map(|kv| kv.split_once('=')).take(16).collect()
}

impl Dataplane {
    /// Writes view `what` to `out`; `false` if no one has such a view.
    pub fn show(&self, what: &str, query: &[(&str, &str)], now: Micros, out: &mut String) -> bool {
        match what {
            "" => {
                let _ = writeln!(out, "views: {}", views_help());
            }
            "ports" => {
                // Addresses in use (DAD passed), link-local first.
                let v6: Vec<String> = self
                    .ports
                    .iter()
                    .map(|p| {
                        let a: Vec<String> =
                            p.host6.iter().flat_map(|h| h.preferred()).map(|a| alloc::format!("{a}")).collect();
                        if a.is_empty() {
                            String::from("-")
                        } else {
                            a.join(",")
                        }
                    })
                    .collect();
                let w6 = v6.iter().map(String::len).fold(23, usize::max) + 1;
                let _ = writeln!(
                    out,
                    "{:<10} {:<20} {:<17} {:>5} {:>12} {:>12} {:>10} {:<w6$} {:<8} kind",
                    "port", "address", "mac", "mtu", "rx_packets", "tx_packets", "drops", "ipv6", "vrf"
                );
                for (i, p) in self.ports.iter().enumerate() {
                    let addr = p.address.map(|a| alloc::format!("{a}")).unwrap_or_else(|| "-".into());
                    let c = &p.counters;
                    let pc = &self.config.ports[i];
                    let kind = match &pc.kind {
                        crate::config::PortKind::Nic => String::from("nic"),
                        crate::config::PortKind::Vlan(v) if v.outer != 0 => {
                            alloc::format!("vlan:{}/{}.{}", v.parent_name, v.outer, v.vid)
                        }
                        crate::config::PortKind::Vlan(v) => alloc::format!("vlan:{}/{}", v.parent_name, v.vid),
                        crate::config::PortKind::Tunnel(t) => alloc::format!(
                            "{}{}:{}",
                            t.proto.name(),
                            if t.insertion { "-insertion" } else { "" },
                            t.vni
                        ),
                    };
                    let _ = writeln!(
                        out,
                        "{:<10} {:<20} {:<17} {:>5} {:>12} {:>12} {:>10} {:<w6$} {:<8} {}",
                        p.name,
                        addr,
                        alloc::format!("{}", fmt_mac(&p.mac)),
                        p.mtu,
                        c.rx_packets,
                        c.tx_packets,
                        c.total_drops(),
                        v6[i],
                        self.config.vrf_name(pc.vrf),
                        kind
                    );
                }
                for (i, t) in self.l2.trunks.iter().enumerate() {
                    for (outer, vid, n) in &t.unknown.per_vlan {
                        let vlan = if *outer == 0 { alloc::format!("{vid}") } else { alloc::format!("{outer}.{vid}") };
                        let _ = writeln!(
                            out,
                            "port {}: {n} frame(s) of VLAN {vlan}, which no sub-port takes",
                            self.ports[i].name
                        );
                    }
                }
            }
            "neighbors" => {
                let iw = self.egress.neighbors6.entries(now).map(|e| text_len(e.1)).fold(15, usize::max) + 1;
                let _ = writeln!(out, "{:<iw$} {:<10} {:<17} {:<11} {:>10}", "ip", "port", "mac", "state", "idle_ms");
                let v4 =
                    self.egress.neighbors.entries(now).map(|(p, ip, m, s, i)| (p, core::net::IpAddr::V4(ip), m, s, i));
                let v6 =
                    self.egress.neighbors6.entries(now).map(|(p, ip, m, s, i)| (p, core::net::IpAddr::V6(ip), m, s, i));
                // Paged like `sessions` (the cache may hold 2^20 + 2^20
                // entries, filled from the data plane): `offset=N` (rows to
                // skip), `limit=N` (at most 1000).
                let num = |k: &str| query.iter().find(|(key, _)| *key == k).and_then(|(_, v)| v.parse::<usize>().ok());
                let offset = num("offset").unwrap_or(0);
                let limit = num("limit").unwrap_or(100).clamp(1, NEIGHBOR_PAGE);
                let mut rows = v4.chain(v6).skip(offset);
                for (port, ip, mac, state, idle) in rows.by_ref().take(limit) {
                    let name = self.ports.get(port as usize).map_or("?", |p| p.name.as_str());
                    let mac = mac.map(|m| alloc::format!("{}", fmt_mac(&m))).unwrap_or_else(|| "-".into());
                    let _ = writeln!(
                        out,
                        "{:<iw$} {:<10} {:<17} {:<11} {:>10}",
                        alloc::format!("{ip}"),
                        name,
                        mac,
                        state,
                        idle / 1000
                    );
                }
                if rows.next().is_some() {
                    let _ = writeln!(out, "more: offset={}", offset.saturating_add(limit));
                }
            }
            "tunnels" => {
                let _ = writeln!(
                    out,
                    "{:<10} {:<7} {:>8} {:<15} {:<10} {:>12} {:>12} {:>9} {:>10} remotes",
                    "port", "type", "vni", "local", "underlay", "decap", "encap", "flooded", "reflected"
                );
                for t in &self.l2.tunnels.list {
                    let c = &t.counters;
                    let remotes: Vec<String> = t
                        .cfg
                        .remotes
                        .iter()
                        .zip(&t.cfg.next_hops)
                        .map(|(r, h)| if r == h { alloc::format!("{r}") } else { alloc::format!("{r}(via:{h})") })
                        .collect();
                    let _ = writeln!(
                        out,
                        "{:<10} {:<7} {:>8} {:<15} {:<10} {:>12} {:>12} {:>9} {:>10} {}",
                        self.ports[t.port as usize].name,
                        t.cfg.proto.name(),
                        t.cfg.vni,
                        alloc::format!("{}", t.cfg.local),
                        self.ports[t.cfg.underlay].name,
                        c.decapsulated,
                        c.encapsulated,
                        c.flooded,
                        c.reflected,
                        if remotes.is_empty() { String::from("any") } else { remotes.join(",") }
                    );
                }
            }
            "routes" => {
                let mgmt = self.config.management.as_ref().map(|m| m.port);
                // A million routes is a lot of text: bounded by `limit`.
                let limit = query
                    .iter()
                    .find(|(k, _)| *k == "limit")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(1000usize)
                    .min(100_000);
                // Columns as wide as the widest prefix and next hop shown.
                let (r4, r6) = (self.config.routes.iter().take(limit), self.config.routes6.iter().take(limit));
                let pw = r4.clone().map(|r| text_len(r.prefix)).chain(r6.clone().map(|r| text_len(r.prefix)));
                let pw = pw
                    .chain(
                        self.ports
                            .iter()
                            .flat_map(|p| p.host6.iter().flat_map(|h| h.addrs.iter().skip(1)))
                            .map(|a| text_len(a.net.trunc())),
                    )
                    .fold(19, usize::max)
                    + 1;
                let vw = r4.flat_map(|r| r.via).map(text_len).chain(r6.flat_map(|r| r.via).map(text_len));
                let vw = vw.fold(15, usize::max) + 1;
                let _ = writeln!(out, "{:<pw$} {:<vw$} {:<10} vrf", "prefix", "via", "port");
                for (i, p) in self.ports.iter().enumerate() {
                    if let Some(a) = p.address.filter(|_| Some(i) != mgmt) {
                        let vrf = self.config.vrf_name(self.config.ports[i].vrf);
                        let _ = writeln!(
                            out,
                            "{:<pw$} {:<vw$} {:<10} {vrf}",
                            alloc::format!("{}", a.trunc()),
                            "connected",
                            p.name
                        );
                    }
                }
                for r in self.config.routes.iter().take(limit) {
                    let via = r.via.map(|v| alloc::format!("{v}")).unwrap_or_else(|| "-".into());
                    let _ = writeln!(
                        out,
                        "{:<pw$} {:<vw$} {:<10} {}",
                        alloc::format!("{}", r.prefix),
                        via,
                        self.ports[r.port].name,
                        self.config.vrf_name(r.vrf)
                    );
                }
                if self.config.routes.len() > limit {
                    let _ = writeln!(out, "… {} more (limit={limit})", self.config.routes.len() - limit);
                }
                for (_, p) in self.ports.iter().enumerate().filter(|(i, _)| Some(*i) != mgmt) {
                    // The link-local /64 is every port's: not a route.
                    for a in p.host6.iter().flat_map(|h| h.addrs.iter().skip(1)) {
                        let _ = writeln!(
                            out,
                            "{:<pw$} {:<vw$} {:<10} default",
                            alloc::format!("{}", a.net.trunc()),
                            "connected",
                            p.name
                        );
                    }
                }
                for r in self.config.routes6.iter().take(limit) {
                    let via = r.via.map(|v| alloc::format!("{v}")).unwrap_or_else(|| "-".into());
                    let _ = writeln!(
                        out,
                        "{:<pw$} {:<vw$} {:<10} {}",
                        alloc::format!("{}", r.prefix),
                        via,
                        self.ports[r.port].name,
                        // IPv6 routes are one table, the default VRF's.
                        self.config.vrf_name(0)
                    );
                }
                if self.config.routes6.len() > limit {
                    let _ = writeln!(out, "… {} more IPv6 (limit={limit})", self.config.routes6.len() - limit);
                }
            }
            "stages" => {
                let _ = writeln!(out, "{:<16} {:<10} {:>12}", "stage", "kind", "packets");
                for r in &self.stages {
                    let _ = writeln!(out, "{:<16} {:<10} {:>12}", r.name, r.kind, r.counters.packets);
                }
                for (i, p) in self.ports.iter().enumerate() {
                    let _ = writeln!(out, "pipeline {}: {}", p.name, self.config.pipeline_names(i).join(" "));
                }
            }
            _ => {
                // A stage's view; with `stage=NAME`, that instance's only.
                let only = query.iter().find(|(k, _)| *k == "stage").map(|(_, v)| *v);
                let mut any = false;
                for r in self.stages.iter().filter(|r| only.is_none_or(|n| n == r.name)) {
                    let mut part = String::new();
                    if r.stage.show(what, query, now, &mut part) {
                        let _ = writeln!(out, "# {} ({})", r.name, r.kind);
                        out.push_str(&part);
                        any = true;
                    }
                }
                return any;
            }
        }
        true
    }
}

/// A JSON string literal.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A view's text as JSON (`?format=json`): each table (a stage's view
/// starts one with its `# name (kind)` line) becomes its rows as objects
/// keyed by the header's column names, numbers as numbers; lines that are
/// not rows (`pipeline …`, `… N more`) go in `notes`. Linear in the text.
pub fn json_of_view(view: &str, text: &str) -> String {
    let mut out = String::from("{\"view\":");
    json_str(&mut out, view);
    out.push_str(",\"tables\":[");
    let mut header: Option<alloc::vec::Vec<&str>> = None;
    let mut notes: alloc::vec::Vec<&str> = alloc::vec::Vec::new();
    let mut tables = 0;
    let mut rows = 0;
    let close = |out: &mut String, notes: &mut alloc::vec::Vec<&str>| {
        out.push_str("],\"notes\":[");
        for (i, n) in notes.drain(..).enumerate() {
            if i > 0 {
                out.push(',');
            }
            json_str(out, n);
        }
        out.push_str("]}");
    };
    let open = |out: &mut String, title: &str, tables: &mut usize| {
        if *tables > 0 {
            out.push(',');
        }
        *tables += 1;
        out.push_str("{\"title\":");
        json_str(out, title);
        out.push_str(",\"rows\":[");
    };
    for line in text.lines() {
        if let Some(title) = line.strip_prefix("# ") {
            if tables > 0 {
                close(&mut out, &mut notes);
            }
            open(&mut out, title, &mut tables);
            header = None;
            rows = 0;
            continue;
        }
        if tables == 0 {
            open(&mut out, "", &mut tables);
        }
        let fields: alloc::vec::Vec<&str> = line.split_whitespace().collect();
        match &header {
            None if !fields.is_empty() => header = Some(fields),
            Some(h) if fields.len() == h.len() => {
                if rows > 0 {
                    out.push(',');
                }
                rows += 1;
                out.push('{');
                for (i, (k, v)) in h.iter().zip(&fields).enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    json_str(&mut out, k);
                    out.push(':');
                    let number = v.parse::<i64>().is_ok()
                        || (v.parse::<f64>().is_ok_and(|f| f.is_finite()) && !v.contains(['e', 'E', 'i', 'n']));
                    if number && !v.starts_with('+') {
                        out.push_str(v);
                    } else {
                        json_str(&mut out, v);
                    }
                }
                out.push('}');
            }
            _ if !line.trim().is_empty() => notes.push(line.trim()),
            _ => {}
        }
    }
    if tables > 0 {
        close(&mut out, &mut notes);
    }
    out.push_str("]}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::json_of_view;

    #[test]
    fn views_become_json_tables_with_numbers_strings_and_notes() {
        let text = "port  address      drops\nlan   10.0.0.1/24  7\nwan   -            0\n# nat (nat)\nproto inside\ntcp \"q\\\n… 3 more (limit=1)\n";
        assert_eq!(
            json_of_view("ports", text),
            "{\"view\":\"ports\",\"tables\":[{\"title\":\"\",\"rows\":[{\"port\":\"lan\",\"address\":\"10.0.0.1/24\",\"drops\":7},\
             {\"port\":\"wan\",\"address\":\"-\",\"drops\":0}],\"notes\":[]},{\"title\":\"nat (nat)\",\"rows\":[{\"proto\":\"tcp\",\
             \"inside\":\"\\\"q\\\\\"}],\"notes\":[\"… 3 more (limit=1)\"]}]}\n"
        );
        assert_eq!(json_of_view("x", ""), "{\"view\":\"x\",\"tables\":[]}\n");
    }
}
