//! The management endpoint's routes: `/health`, `/metrics`, `/config`
//! (`GET` and `PUT`), `/show/…`, `/trace`, `/capture`, with the access
//! check ([`crate::mgmt::Access`]) in front.

use super::{Dataplane, Event};
use crate::capture::{Capture, Filter};
use crate::mgmt::{Request, Response};
use crate::packet::PacketPool;

/// The status `answer` gives a request whose answer comes later (a
/// capture): the endpoint keeps the connection until then.
pub const DEFERRED: u16 = 0;

/// The finished capture as the answer.
pub fn pcap_response(c: Capture) -> Response {
    Response { status: 200, content_type: "application/vnd.tcpdump.pcap", body: c.file }
}

/// How long a trace waits for its packets unless `seconds=` says
/// otherwise, and the most it may ask for.
pub const TRACE_SECONDS: u64 = 60;
pub const MAX_TRACE_SECONDS: u64 = 600;

impl Dataplane {
    /// Answers a management request as the endpoint would (for tests and
    /// the fuzzer; the endpoint itself calls this from `poll`).
    pub fn handle_request(&mut self, req: &Request, pool: &mut PacketPool) -> Response {
        let mut c = self.mgmt_counters;
        let r = self.answer(req, pool, &mut c);
        self.mgmt_counters = c;
        r
    }

    /// Answers a management request.
    pub(super) fn answer(
        &mut self,
        req: &Request,
        pool: &mut PacketPool,
        counters: &mut crate::mgmt::MgmtCounters,
    ) -> Response {
        let metrics_open = self.config.management.as_ref().is_some_and(|m| m.metrics_open);
        let access = crate::mgmt::Access { token: self.mgmt_token.as_deref(), metrics_open };
        if let Err(refusal) = access.check(&req.method, &req.path, req.bearer.as_deref()) {
            counters.unauthorized += 1;
            return refusal;
        }
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/metrics") => {
                let s = self.metrics(pool);
                Response { status: 200, content_type: "text/plain; version=0.0.4; charset=utf-8", body: s.into_bytes() }
            }
            ("GET", "/health") => Response::text(
                200,
                alloc::format!(
                    "ok\nconfig: {} ({} reloads)\n{}",
                    self.config_origin,
                    self.reloads,
                    self.last_reload_us.map(|us| alloc::format!("last reload: {us} us\n")).unwrap_or_default()
                ),
            ),
            ("GET", "/config") => Response::text(200, self.config_text.clone()),
            ("PUT", "/config") => match core::str::from_utf8(&req.body) {
                Err(_) => Response::text(400, "config is not UTF-8\n"),
                Ok(text) => {
                    let t0 = self.clock.map(|c| c());
                    let result = self.reload("PUT /config", text, pool);
                    if let (Some(c), Some(t0)) = (self.clock, t0) {
                        self.last_reload_us = Some(c().saturating_sub(t0));
                    }
                    let why = result.as_ref().err().and_then(|e| e.lines().next()).unwrap_or("").into();
                    self.push_event(Event::Reloaded { ok: result.is_ok(), why });
                    match result {
                        Ok(()) => {
                            self.config_origin = alloc::format!("PUT /config, reload {}", self.reloads);
                            Response::text(
                                200,
                                "config applied; it lasts until the appliance restarts (the boot config \
                                 comes from fw_cfg, the command line or the image)\n",
                            )
                        }
                        Err(e) => Response::text(400, e),
                    }
                }
            },
            ("GET", p) if p.starts_with("/show/") => {
                let (what, q) = p["/show/".len()..].split_once('?').unwrap_or((&p["/show/".len()..], ""));
                let now = self.clock.map_or(0, |c| c());
                let mut out = alloc::string::String::new();
                let query = super::query_pairs(q);
                if self.show(what, &query, now, &mut out) {
                    if query.contains(&("format", "json")) {
                        let body = super::show::json_of_view(what, &out).into_bytes();
                        Response { status: 200, content_type: "application/json", body }
                    } else {
                        Response::text(200, out)
                    }
                } else {
                    Response::text(404, alloc::format!("no view `{what}`: try {}\n", super::views_help()))
                }
            }
            ("POST", p) if p == "/trace" || p.starts_with("/trace?") => {
                let q = super::query_pairs(p.split_once('?').map_or("", |(_, q)| q));
                let count = match q.iter().find(|(k, _)| *k == "count").map(|(_, v)| *v) {
                    None => 10,
                    Some(v) => match v.parse::<u32>() {
                        Ok(n) if (1..=super::trace::MAX_TRACE).contains(&n) => n,
                        _ => {
                            return Response::text(
                                400,
                                alloc::format!("`count={v}`: expected 1 to {}\n", super::trace::MAX_TRACE),
                            )
                        }
                    },
                };
                let port = match q.iter().find(|(k, _)| *k == "port").map(|(_, v)| *v) {
                    None => None,
                    Some(name) => match self.config.port_by_name(name) {
                        Some(i) => Some(i as u8),
                        None => return Response::text(400, alloc::format!("no port named `{name}`\n")),
                    },
                };
                let filter = match Filter::parse(
                    &q.iter().find(|(k, _)| *k == "filter").map_or("", |(_, v)| *v).replace("%20", " "),
                ) {
                    Ok(f) => f,
                    Err(e) => return Response::text(400, alloc::format!("filter: {e}\n")),
                };
                let seconds = match q.iter().find(|(k, _)| *k == "seconds").map(|(_, v)| *v) {
                    None => TRACE_SECONDS,
                    Some(v) => match v.parse::<u64>() {
                        Ok(n) if (1..=MAX_TRACE_SECONDS).contains(&n) => n,
                        _ => {
                            return Response::text(
                                400,
                                alloc::format!("`seconds={v}`: expected 1 to {MAX_TRACE_SECONDS}\n"),
                            )
                        }
                    },
                };
                let now = self.clock.map_or(0, |c| c());
                let deadline = now.saturating_add(seconds * 1_000_000);
                self.trace = Some(super::trace::Trace::new(count, port, filter).until(deadline));
                Response::text(
                    200,
                    alloc::format!(
                        "tracing the next {count} packets for at most {seconds} s (seconds=N, at most \
                         {MAX_TRACE_SECONDS}): GET /trace\n"
                    ),
                )
            }
            ("GET", "/trace") => match &self.trace {
                Some(t) => Response::text(200, t.text()),
                None => Response::text(404, "no trace: POST /trace?count=N first\n"),
            },
            ("GET", p) if p == "/capture" || p.starts_with("/capture?") => {
                let q = super::query_pairs(p.split_once('?').map_or("", |(_, q)| q));
                self.start_capture(&q)
            }
            (_, "/metrics" | "/health" | "/config") => Response::text(405, "method not allowed\n"),
            _ => Response::text(
                404,
                "not found: try /metrics, /health, /config, /show/ports, /capture?port=NAME, /trace\n",
            ),
        }
    }

    /// `GET /capture?port=NAME&count=N&seconds=S&filter=WORDS`: starts the
    /// capture (answered later) or says why not.
    fn start_capture(&mut self, q: &[(&str, &str)]) -> Response {
        let get = |k: &str| q.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
        let Some(port) = get("port").and_then(|n| self.config.port_by_name(n)) else {
            let names: alloc::vec::Vec<&str> = self.config.ports.iter().map(|p| p.name.as_str()).collect();
            return Response::text(400, alloc::format!("capture needs `port=NAME`, one of: {}\n", names.join(", ")));
        };
        let number =
            |k: &str, default: u64, max: u64| match get(k) {
                None => Ok(default),
                Some(v) => v.parse::<u64>().ok().filter(|n| (1..=max).contains(n)).ok_or_else(|| {
                    Response::text(400, alloc::format!("`{k}={v}`: expected a number from 1 to {max}\n"))
                }),
            };
        let count = match number("count", 100, crate::capture::MAX_COUNT as u64) {
            Ok(n) => n as u32,
            Err(r) => return r,
        };
        let seconds = match number("seconds", 10, crate::capture::MAX_SECONDS) {
            Ok(n) => n,
            Err(r) => return r,
        };
        let filter = match Filter::parse(&get("filter").unwrap_or("").replace("%20", " ")) {
            Ok(f) => f,
            Err(e) => return Response::text(400, alloc::format!("filter: {e}\n")),
        };
        if self.capture.is_some() {
            return Response::text(409, "a capture is already running: one at a time\n");
        }
        let now = self.clock.map_or(0, |c| c());
        // The whole file is reserved (and charged) now: a capture never
        // grows its buffer while frames pass.
        let bytes = Capture::bytes_for(count);
        let Some(file) = self.mgmt_budget.alloc(bytes) else {
            return Response::text(
                503,
                alloc::format!(
                    "a capture of {count} frames needs {} KiB and the management budget has {} KiB free: ask for \
                     fewer (count=N)\n",
                    bytes.div_ceil(1024),
                    (self.mgmt_budget.limit() - self.mgmt_budget.used()) / 1024
                ),
            );
        };
        self.capture = Some(Capture::new(port as u8, filter, count, seconds, now, file));
        Response { status: DEFERRED, content_type: "", body: alloc::vec::Vec::new() }
    }
}
