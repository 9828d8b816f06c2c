//! The management endpoint: HTTP/1.1 on the appliance's own smoltcp stack,
//! on the dedicated management port only.
//!
//! A few listening sockets (the connection limit), a size limit on requests
//! and an idle timeout per connection, so a misbehaving client cannot wedge
//! the appliance. Access is decided when a request's header ends, before
//! any of its body is read: a client without the token gets its 401 (or
//! 403) at once and the connection is closed, and 401s are rate-limited per
//! source. Every buffer the endpoint holds (requests, responses, a capture)
//! is charged to one [`Budget`] sized at boot and allocated fallibly, so no
//! management request can take the heap the data path needs: when the
//! budget is spent the answer is 503. This module speaks HTTP; the
//! dataplane answers the requests (`/metrics`, `/health`, `/config`).

use alloc::string::String;
use alloc::vec::Vec;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::State;

use crate::hoststack::HostStack;
use crate::ratelimit::PerSource;
use crate::Micros;

/// Connections served at once. One more socket always listens: when it
/// takes a connection, the connection that has been reading its request the
/// longest is closed, so clients that trickle bytes (slowloris) cannot lock
/// a new client out.
pub const MAX_CONNECTIONS: usize = 4;
/// Largest request (headers and body): a config of a few thousand lines.
pub const MAX_REQUEST: usize = 256 * 1024;
/// Largest request header.
pub const MAX_HEADER: usize = 8 * 1024;
/// A connection idle this long is dropped.
pub const IDLE_TIMEOUT: Micros = 10_000_000;
/// A whole request must arrive within this time of the connection opening,
/// however steadily its bytes come.
pub const REQUEST_DEADLINE: Micros = 15_000_000;
/// A response must be taken by the client within this time.
pub const RESPONSE_DEADLINE: Micros = 30_000_000;
/// The shortest token accepted: 16 bytes (128 bits if random).
pub const MIN_TOKEN: usize = 16;
/// 401s per second (and in a burst) each source may draw; beyond that its
/// connections are reset unanswered, so guessing tokens is slow.
pub const UNAUTHORIZED_RATE: u32 = 2;
pub const UNAUTHORIZED_BURST: u32 = 10;
/// The management budget's bounds: at least one largest request and its
/// answer, at most what five connections with the largest requests hold.
pub const BUDGET_MIN: usize = MAX_REQUEST + 64 * 1024;
pub const BUDGET_MAX: usize = 5 * MAX_REQUEST;
/// Answers that are refusals (a few hundred bytes each) are not charged:
/// a spent budget must still be able to say so.
const SMALL_ANSWER: usize = 512;

/// Refuses a token shorter than [`MIN_TOKEN`] bytes, naming its length.
pub fn check_token(token: &[u8]) -> Result<(), String> {
    if token.len() < MIN_TOKEN {
        return Err(alloc::format!(
            "the management token is {} bytes: at least {MIN_TOKEN} are needed (e.g. `head -c 24 /dev/urandom | base64`)",
            token.len()
        ));
    }
    Ok(())
}

/// The management budget for a heap with `free` bytes left after the
/// tables: an eighth of it, within [`BUDGET_MIN`]..=[`BUDGET_MAX`]. The
/// kernel takes it out of the heap before the packet pool is sized.
pub fn budget_for(free: usize) -> usize {
    (free / 8).clamp(BUDGET_MIN, BUDGET_MAX)
}

/// The bytes management buffers may hold together. Charged before each
/// (fallible) allocation and given back when the buffer goes.
#[derive(Clone, Debug)]
pub struct Budget {
    limit: usize,
    used: usize,
}

impl Budget {
    pub fn new(limit: usize) -> Budget {
        Budget { limit, used: 0 }
    }

    /// Charges `n` bytes if they fit.
    pub fn try_take(&mut self, n: usize) -> bool {
        if n > self.limit - self.used {
            return false;
        }
        self.used += n;
        true
    }

    pub fn give(&mut self, n: usize) {
        self.used = self.used.saturating_sub(n);
    }

    pub fn used(&self) -> usize {
        self.used
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A buffer of `n` bytes charged to the budget, allocated fallibly;
    /// `None` (nothing charged) if either is spent.
    pub fn alloc(&mut self, n: usize) -> Option<Vec<u8>> {
        if !self.try_take(n) {
            return None;
        }
        let mut v = Vec::new();
        if v.try_reserve_exact(n).is_err() {
            self.give(n);
            return None;
        }
        Some(v)
    }
}

/// A parsed request.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
    /// The token of an `Authorization: Bearer TOKEN` header.
    pub bearer: Option<String>,
}

/// A request's header, parsed when it ends (before its body is read).
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub method: String,
    pub path: String,
    pub bearer: Option<String>,
    /// The body's length (`Content-Length`), bounded by [`MAX_REQUEST`]
    /// (0 when `oversized`).
    pub length: usize,
    /// The `Content-Length` was over the limit: a 413, once access has
    /// been checked (a client without the token learns nothing more).
    pub oversized: bool,
    /// Where the body starts in the request's bytes.
    pub body_start: usize,
}

/// A response to send.
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response { status, content_type: "text/plain; charset=utf-8", body: body.into().into_bytes() }
    }
}

/// Who may do what: the token (if one is configured) and whether
/// `/metrics` is open.
#[derive(Clone, Copy, Debug, Default)]
pub struct Access<'a> {
    pub token: Option<&'a [u8]>,
    pub metrics_open: bool,
}

impl Access<'_> {
    /// Whether a request may go on: `Err` is the refusal (401 for a missing
    /// or wrong token; 403 without a configured token for what changes the
    /// appliance or records its traffic: reloads, traces, captures).
    pub fn check(&self, method: &str, path: &str, bearer: Option<&str>) -> Result<(), Response> {
        let bare = path.split_once('?').map_or(path, |(p, _)| p);
        let open = bare == "/health" || bare == "/metrics" && self.metrics_open;
        match self.token {
            Some(token) if !open && !bearer.is_some_and(|b| token_matches(b.as_bytes(), token)) => {
                return Err(Response::text(401, "this endpoint needs `Authorization: Bearer TOKEN`\n"));
            }
            None if !open && (method != "GET" || bare == "/capture") => {
                return Err(Response::text(
                    403,
                    "reloads, traces and captures need a management token: add `token-file PATH` to the \
                     `management` statement (the token reaches the image through fw_cfg opt/sluice/token)\n",
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    Reading,
    /// Request handed out, waiting for `respond`.
    Handling,
    Writing,
}

struct Conn {
    handle: SocketHandle,
    phase: Phase,
    /// The request so far: its header, then (once allowed and charged)
    /// its body, in one buffer reserved whole when the header ends.
    buf: Vec<u8>,
    /// The header, once it ended.
    head: Option<Head>,
    /// The response: its status line and header, then its body.
    out_head: Vec<u8>,
    out_body: Vec<u8>,
    sent: usize,
    /// Bytes this connection holds against the budget.
    charged: usize,
    last: Micros,
    /// When the connection opened (or the response began).
    started: Micros,
}

impl Conn {
    fn out_len(&self) -> usize {
        self.out_head.len() + self.out_body.len()
    }

    /// Frees every buffer and gives its charge back.
    fn release(&mut self, budget: &mut Budget) {
        budget.give(self.charged);
        self.charged = 0;
        self.buf = Vec::new();
        self.head = None;
        self.out_head = Vec::new();
        self.out_body = Vec::new();
        self.sent = 0;
    }

    /// Starts writing `r`, charging its body to the budget (503 if it does
    /// not fit; small refusals are not charged).
    fn answer(&mut self, r: Response, budget: &mut Budget, counters: &mut MgmtCounters) {
        self.release(budget);
        // The body's buffer is taken as it is (no copy) and charged; a
        // body the budget cannot hold is dropped for a 503.
        let size = r.body.capacity();
        if size > SMALL_ANSWER {
            if !budget.try_take(size) {
                counters.over_budget += 1;
                drop(r);
                return self.answer(over_budget(), budget, counters);
            }
            self.charged = size;
        }
        self.out_head = header_bytes(r.status, r.content_type, r.body.len());
        self.out_body = r.body;
        self.phase = Phase::Writing;
    }

    /// Like `answer`, taking the body's buffer (already charged to the
    /// budget by whoever built it: `charged` bytes) without a copy.
    fn answer_owned(&mut self, r: Response, charged: usize, budget: &mut Budget) {
        self.release(budget);
        self.charged = charged;
        self.out_head = header_bytes(r.status, r.content_type, r.body.len());
        self.out_body = r.body;
        self.phase = Phase::Writing;
    }
}

fn over_budget() -> Response {
    Response::text(503, "the management endpoint's memory budget is spent: try again shortly\n")
}

crate::counters! {
    /// The management endpoint's own counters.
    pub struct MgmtCounters {
        requests: counter "management requests answered",
        rejected: counter "management requests refused as malformed or too large",
        /// Connections closed because they were idle or missed a deadline.
        timeouts: counter "management connections closed for idling or missing the deadline",
        /// Connections closed to let a new client in.
        evicted: counter "management connections closed to let a new client in",
        /// Requests refused for a missing or wrong token.
        unauthorized: counter "management requests refused for a missing or wrong token",
        /// Connections reset unanswered: their source drew too many 401s.
        rate_limited: counter "management connections reset unanswered because their source drew too many 401s",
        /// Requests refused (503) because the management budget was spent.
        over_budget: counter "management requests refused because the management memory budget was spent",
    }
}

pub struct Management {
    listen: u16,
    conns: Vec<Conn>,
    /// 401s per source.
    refusals: PerSource,
    pub counters: MgmtCounters,
}

/// Parses a request's header from `buf`: `Ok(None)` if it has not ended.
///
/// Every number from the request is bounded before it is used: a
/// `Content-Length` is parsed as a decimal of at most a few digits and
/// compared with what is left of [`MAX_REQUEST`] after the header, never
/// added to anything first. A request with two `Content-Length` headers is
/// refused (RFC 9112 §6.3: conflicting lengths are unrecoverable, and
/// "the last one wins" lets a proxy and sluice disagree on where the body
/// ends).
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, (u16, &'static str)> {
    let limit = buf.len().min(MAX_HEADER + 4);
    let Some(end) = buf[..limit].windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_HEADER { Err((431, "request header too large\n")) } else { Ok(None) };
    };
    let head = core::str::from_utf8(&buf[..end]).map_err(|_| (400, "request header is not UTF-8\n"))?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let (Some(method), Some(path), Some(version), None) = (first.next(), first.next(), first.next(), first.next())
    else {
        return Err((400, "bad request line\n"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err((505, "HTTP/1.x only\n"));
    }
    if method.is_empty() || path.is_empty() || method.len() > 16 || path.len() > 1024 {
        return Err((400, "bad request line\n"));
    }
    let mut length: Option<usize> = None;
    let mut authorization: Option<&str> = None;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            return Err((400, "bad header line\n"));
        };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("content-length") {
            if length.is_some() {
                return Err((400, "more than one Content-Length\n"));
            }
            // Digits only (no sign, no spaces), few enough that the value
            // cannot overflow; anything above the limit is refused below.
            if v.is_empty() || v.len() > 12 || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err((400, "bad Content-Length\n"));
            }
            length = Some(v.parse().map_err(|_| (400, "bad Content-Length\n"))?);
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            return Err((411, "send a Content-Length, not chunked encoding\n"));
        } else if k.eq_ignore_ascii_case("authorization") {
            if authorization.is_some() {
                return Err((400, "more than one Authorization\n"));
            }
            authorization = Some(v);
        }
    }
    let length = length.unwrap_or(0);
    let body_start = end + 4;
    // `body_start <= MAX_HEADER + 4 < MAX_REQUEST`: no underflow, no overflow.
    let oversized = length > MAX_REQUEST - body_start;
    let length = if oversized { 0 } else { length };
    let bearer = authorization.and_then(|a| {
        let (scheme, token) = a.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| String::from(token.trim()))
    });
    Ok(Some(Head { method: method.into(), path: path.into(), bearer, length, oversized, body_start }))
}

/// Parses a complete request from `buf`: `Ok(None)` if more bytes are
/// needed (the fuzzer's and the tests' way in; the endpoint reads the
/// header first with [`parse_head`]).
pub fn parse_request(buf: &[u8]) -> Result<Option<Request>, (u16, &'static str)> {
    let Some(h) = parse_head(buf)? else { return Ok(None) };
    if h.oversized {
        return Err((413, "request too large\n"));
    }
    let Some(body) = buf.get(h.body_start..h.body_start + h.length) else {
        return Ok(None);
    };
    Ok(Some(Request { method: h.method, path: h.path, body: body.to_vec(), bearer: h.bearer }))
}

/// Compares a presented token with the configured one in time that depends
/// only on the configured token's length, not on where they differ.
pub fn token_matches(presented: &[u8], expected: &[u8]) -> bool {
    let mut diff = (presented.len() != expected.len()) as u8;
    for (i, e) in expected.iter().enumerate() {
        diff |= e ^ presented.get(i).copied().unwrap_or(!e);
    }
    core::hint::black_box(diff) == 0
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Status",
    }
}

impl Management {
    /// Opens the listening sockets on `host`; `key` keys the per-source
    /// 401 limiter.
    pub fn new(host: &mut HostStack, listen: u16, key: u64) -> Management {
        let conns = (0..MAX_CONNECTIONS + 1)
            .filter_map(|_| host.tcp_listen(listen, 16 * 1024, 16 * 1024))
            .map(|handle| Conn {
                handle,
                phase: Phase::Idle,
                buf: Vec::new(),
                head: None,
                out_head: Vec::new(),
                out_body: Vec::new(),
                sent: 0,
                charged: 0,
                last: 0,
                started: 0,
            })
            .collect();
        Management {
            listen,
            conns,
            refusals: PerSource::new(UNAUTHORIZED_RATE, UNAUTHORIZED_BURST, key),
            counters: MgmtCounters::default(),
        }
    }

    /// Moves bytes in and out; returns the requests that became complete
    /// (connection index, request) for the caller to answer with `respond`.
    /// A request's header is checked against `access` when it ends; only
    /// an allowed request's body is read, into a buffer charged to `budget`.
    pub fn poll(
        &mut self,
        host: &mut HostStack,
        now: Micros,
        access: &Access<'_>,
        budget: &mut Budget,
    ) -> Vec<(usize, Request)> {
        let mut ready = Vec::new();
        for (i, c) in self.conns.iter_mut().enumerate() {
            let state = host.tcp_state(c.handle);
            match c.phase {
                Phase::Idle if state != State::Listen => {
                    c.phase = Phase::Reading;
                    c.last = now;
                    c.started = now;
                    c.release(budget);
                }
                Phase::Idle => continue,
                _ => {}
            }
            if c.phase == Phase::Reading {
                read_request(c, host, now, access, budget, &mut self.refusals, &mut self.counters, &mut ready, i);
            }
            if c.phase == Phase::Writing {
                // Bytes of a refused request's body are read and dropped
                // (nothing is kept), so the client can finish sending
                // and read the answer.
                let mut chunk = [0u8; 2048];
                while host.tcp_recv(c.handle, &mut chunk) > 0 {}
            }
            if c.phase == Phase::Writing && c.sent < c.out_len() {
                let hl = c.out_head.len();
                let rest = if c.sent < hl { &c.out_head[c.sent..] } else { &c.out_body[c.sent - hl..] };
                let n = host.tcp_send_some(c.handle, rest);
                if n > 0 {
                    c.sent += n;
                    c.last = now;
                }
                if c.sent == c.out_len() {
                    host.tcp_finish(c.handle);
                    // All in the socket: the buffers go now, not when the
                    // client has read it.
                    c.release(budget);
                }
            }
            let sent_all = c.phase == Phase::Writing && c.sent >= c.out_len();
            let gone = matches!(state, State::Closed | State::TimeWait | State::Closing | State::LastAck)
                || sent_all && state == State::FinWait2;
            let deadline = match c.phase {
                Phase::Reading => REQUEST_DEADLINE,
                Phase::Writing => RESPONSE_DEADLINE,
                _ => Micros::MAX,
            };
            let idle = c.phase != Phase::Handling
                && (now.saturating_sub(c.last) > IDLE_TIMEOUT || now.saturating_sub(c.started) > deadline);
            if (gone && c.phase != Phase::Handling) || idle {
                if idle && !gone {
                    self.counters.timeouts += 1;
                }
                host.tcp_relisten(c.handle, self.listen);
                c.phase = Phase::Idle;
                c.release(budget);
            }
        }
        // Keep one socket listening: if every socket holds a connection,
        // close the one that has been reading its request the longest.
        let listening = self.conns.iter().any(|c| c.phase == Phase::Idle);
        if !listening {
            let oldest = self
                .conns
                .iter()
                .enumerate()
                .filter(|(_, c)| c.phase == Phase::Reading)
                .min_by_key(|(_, c)| c.started)
                .map(|(i, _)| i);
            if let Some(i) = oldest {
                let c = &mut self.conns[i];
                self.counters.evicted += 1;
                host.tcp_relisten(c.handle, self.listen);
                c.phase = Phase::Idle;
                c.release(budget);
            }
        }
        ready
    }

    /// Queues the response to the request handed out for connection `i`
    /// (the request's buffers are given back to `budget` first).
    pub fn respond(&mut self, i: usize, r: Response, budget: &mut Budget) {
        if let Some(c) = self.conns.get_mut(i) {
            c.answer(r, budget, &mut self.counters);
            c.sent = 0;
            c.started = c.last;
        }
    }

    /// Like `respond`, taking `r`'s body without a copy: its buffer is
    /// already charged to `budget` (`charged` bytes), and the connection
    /// gives the charge back when it is sent.
    pub fn respond_owned(&mut self, i: usize, r: Response, charged: usize, budget: &mut Budget) {
        match self.conns.get_mut(i) {
            Some(c) => {
                c.answer_owned(r, charged, budget);
                c.sent = 0;
                c.started = c.last;
            }
            None => budget.give(charged),
        }
    }
}

/// Reads what arrived of connection `c`'s request: the header up to
/// [`MAX_HEADER`], then (once the header ended and `access` allows it) the
/// body, into a buffer charged to `budget` and reserved whole.
#[allow(clippy::too_many_arguments)]
fn read_request(
    c: &mut Conn,
    host: &mut HostStack,
    now: Micros,
    access: &Access<'_>,
    budget: &mut Budget,
    refusals: &mut PerSource,
    counters: &mut MgmtCounters,
    ready: &mut Vec<(usize, Request)>,
    i: usize,
) {
    let mut chunk = [0u8; 2048];
    loop {
        // Never more than the header's limit, or than the body's length.
        let want = match &c.head {
            None => (MAX_HEADER + 4).saturating_sub(c.buf.len()).max(1),
            Some(h) => (h.body_start + h.length).saturating_sub(c.buf.len()),
        };
        if want == 0 {
            break;
        }
        let n = host.tcp_recv(c.handle, &mut chunk[..want.min(2048)]);
        if n == 0 {
            break;
        }
        c.last = now;
        if c.head.is_none() {
            // Header bytes are charged as they come (at most MAX_HEADER).
            if !budget.try_take(n) || c.buf.try_reserve(n).is_err() {
                counters.over_budget += 1;
                c.answer(over_budget(), budget, counters);
                c.started = now;
                return;
            }
            c.charged += n;
        }
        c.buf.extend_from_slice(&chunk[..n]);
        if c.head.is_some() {
            continue;
        }
        let head = match parse_head(&c.buf) {
            Ok(None) => continue,
            Ok(Some(h)) => h,
            Err((status, why)) => {
                counters.rejected += 1;
                c.answer(Response::text(status, why), budget, counters);
                c.started = now;
                return;
            }
        };
        if let Err(refusal) = access.check(&head.method, &head.path, head.bearer.as_deref()) {
            counters.unauthorized += 1;
            if refusal.status == 401 && !host.tcp_remote(c.handle).is_none_or(|src| take_ip(refusals, src, now)) {
                // This source draws 401s too fast: reset, no answer.
                counters.rate_limited += 1;
                c.release(budget);
                c.phase = Phase::Writing;
                host.tcp_abort(c.handle);
                return;
            }
            c.answer(refusal, budget, counters);
            c.started = now;
            return;
        }
        if head.oversized {
            counters.rejected += 1;
            c.answer(Response::text(413, "request too large\n"), budget, counters);
            c.started = now;
            return;
        }
        // Allowed: the whole request's buffer, reserved (and charged) once.
        let whole = head.body_start + head.length;
        let extra = whole.saturating_sub(c.buf.len());
        if extra > 0 {
            let charged = budget.try_take(extra);
            if charged {
                c.charged += extra;
            }
            if !charged || c.buf.try_reserve_exact(extra).is_err() {
                counters.over_budget += 1;
                c.answer(over_budget(), budget, counters);
                c.started = now;
                return;
            }
        }
        c.head = Some(head);
    }
    let Some(h) = &c.head else { return };
    if c.buf.len() < h.body_start + h.length {
        return;
    }
    // Complete: bytes past the body (a pipelined request) are ignored,
    // the header is cut off in place (no copy of the body).
    let Some(h) = c.head.take() else { return };
    c.buf.truncate(h.body_start + h.length);
    c.buf.drain(..h.body_start);
    counters.requests += 1;
    c.phase = Phase::Handling;
    let body = core::mem::take(&mut c.buf);
    ready.push((i, Request { method: h.method, path: h.path, body, bearer: h.bearer }));
}

/// One 401 more for `src`, if its allowance has one.
fn take_ip(limit: &mut PerSource, src: core::net::IpAddr, now: Micros) -> bool {
    match src {
        core::net::IpAddr::V4(a) => limit.take(a, now),
        core::net::IpAddr::V6(a) => limit.take6(a, now),
    }
}

fn header_bytes(status: u16, content_type: &str, len: usize) -> Vec<u8> {
    alloc::format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        status,
        reason(status),
        content_type,
        len
    )
    .into_bytes()
}

#[cfg(test)]
fn response_bytes(r: &Response) -> Vec<u8> {
    let mut out = header_bytes(r.status, r.content_type, r.body.len());
    out.extend_from_slice(&r.body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_wait_for_their_body() {
        assert_eq!(parse_request(b"GET /metrics HTTP/1.1\r\nHost: x"), Ok(None));
        let r = parse_request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap().unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/metrics"));
        assert_eq!(parse_request(b"PUT /config HTTP/1.1\r\nContent-Length: 5\r\n\r\npor"), Ok(None));
        let r = parse_request(b"PUT /config HTTP/1.1\r\ncontent-length: 5\r\n\r\nport ").unwrap().unwrap();
        assert_eq!(r.body, b"port ");
    }

    #[test]
    fn bad_requests_are_refused_with_a_status() {
        assert_eq!(parse_request(b"GARBAGE\r\n\r\n").unwrap_err().0, 400);
        assert_eq!(parse_request(b"GET / SPDY/3\r\n\r\n").unwrap_err().0, 505);
        assert_eq!(parse_request(b"PUT /config HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n").unwrap_err().0, 413);
        assert_eq!(parse_request(b"PUT /config HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap_err().0, 411);
        assert_eq!(parse_request(&[b'a'; MAX_HEADER + 1]).unwrap_err().0, 431);
    }

    #[test]
    fn request_numbers_are_bounded_before_arithmetic() {
        // This once wrapped `end + 4 + length` and panicked the appliance.
        let r = parse_request(b"GET /health HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n");
        assert_eq!(r.unwrap_err().0, 400);
        for v in ["-1", "+5", "1 2", "0x10", "", "99999999999999999999999"] {
            let req = std::format!("PUT /config HTTP/1.1\r\nContent-Length: {v}\r\n\r\n");
            assert_eq!(parse_request(req.as_bytes()).unwrap_err().0, 400, "{v}");
        }
        let req = std::format!("PUT /config HTTP/1.1\r\nContent-Length: {}\r\n\r\n", MAX_REQUEST);
        assert_eq!(parse_request(req.as_bytes()).unwrap_err().0, 413);
        let two = b"PUT /config HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 0\r\n\r\nport ";
        assert_eq!(parse_request(two).unwrap_err().0, 400);
        let same = b"PUT /config HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\nport ";
        assert_eq!(parse_request(same).unwrap_err().0, 400);
        assert_eq!(parse_request(b"GET / HTTP/1.1\r\nno colon here\r\n\r\n").unwrap_err().0, 400);
    }

    #[test]
    fn bearer_tokens_are_read_and_compared_whole() {
        let r = parse_request(b"GET /config HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n\r\n").unwrap().unwrap();
        assert_eq!(r.bearer.as_deref(), Some("s3cret"));
        let r = parse_request(b"GET /config HTTP/1.1\r\nAuthorization: Basic abc\r\n\r\n").unwrap().unwrap();
        assert_eq!(r.bearer, None);
        assert!(token_matches(b"s3cret", b"s3cret"));
        for bad in [&b""[..], b"s3cre", b"s3cret!", b"S3cret", b"\0\0\0\0\0\0"] {
            assert!(!token_matches(bad, b"s3cret"), "{bad:?}");
        }
    }

    /// The endpoint on one host stack and clients on another, joined by a
    /// wire: real TCP (smoltcp on both ends), the endpoint answering every
    /// request it hands out with 200 "done".
    struct Bench {
        pool: crate::packet::PacketPool,
        server: HostStack,
        client: HostStack,
        mgmt: Management,
        budget: Budget,
        now: Micros,
        /// The most the budget held at any time.
        peak: usize,
        /// Requests handed out (method, path, body length).
        handed: Vec<(String, String, usize)>,
    }

    const SERVER: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
    const CLIENT: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];

    impl Bench {
        fn new(budget: usize) -> Bench {
            let mut server = HostStack::new(SERVER, Some("10.9.0.1/24".parse().unwrap()), &[], None, 1500, 0, 1);
            let client = HostStack::new(CLIENT, Some("10.9.0.2/24".parse().unwrap()), &[], None, 1500, 0, 2);
            let mgmt = Management::new(&mut server, 8080, 3);
            Bench {
                pool: crate::packet::PacketPool::new(512),
                server,
                client,
                mgmt,
                budget: Budget::new(budget),
                now: 1,
                peak: 0,
                handed: Vec::new(),
            }
        }

        fn step(&mut self, token: Option<&[u8]>) {
            use crate::hoststack::TxQueue;
            self.now += 1000;
            let (mut ts, mut tc) = (TxQueue::new(), TxQueue::new());
            self.server.poll(self.now, &mut self.pool, &mut ts);
            self.client.poll(self.now, &mut self.pool, &mut tc);
            while let Some(p) = ts.pop_front() {
                if let Err(p) = self.client.enqueue(p) {
                    self.pool.free(p);
                }
            }
            while let Some(p) = tc.pop_front() {
                if let Err(p) = self.server.enqueue(p) {
                    self.pool.free(p);
                }
            }
            let access = Access { token, metrics_open: false };
            for (i, req) in self.mgmt.poll(&mut self.server, self.now, &access, &mut self.budget) {
                self.peak = self.peak.max(self.budget.used());
                self.handed.push((req.method.clone(), req.path.clone(), req.body.len()));
                drop(req);
                self.mgmt.respond(i, Response::text(200, "done\n"), &mut self.budget);
            }
            self.peak = self.peak.max(self.budget.used());
        }

        fn connect(&mut self, local_port: u16) -> SocketHandle {
            let remote = (core::net::IpAddr::V4(core::net::Ipv4Addr::new(10, 9, 0, 1)), 8080);
            self.client.tcp_open_sized(remote, local_port, 64 * 1024, 64 * 1024).unwrap()
        }

        /// Sends `data` on `h` as the window allows, and reads what comes
        /// back, for `steps` turns; returns what was read and how much of
        /// `data` was sent.
        fn exchange(
            &mut self,
            conns: &mut [(SocketHandle, Vec<u8>, usize, Vec<u8>)],
            token: Option<&[u8]>,
            steps: usize,
        ) {
            for _ in 0..steps {
                for (h, data, sent, got) in conns.iter_mut() {
                    if *sent < data.len() {
                        *sent += self.client.tcp_send_some(*h, &data[*sent..]);
                    }
                    let mut buf = [0u8; 4096];
                    loop {
                        let n = self.client.tcp_recv(*h, &mut buf);
                        if n == 0 {
                            break;
                        }
                        got.extend_from_slice(&buf[..n]);
                    }
                }
                self.step(token);
            }
        }
    }

    fn status(got: &[u8]) -> &str {
        core::str::from_utf8(got).ok().and_then(|s| s.lines().next()).unwrap_or("")
    }

    #[test]
    fn the_token_is_checked_when_the_header_ends_before_any_body_is_read() {
        let mut b = Bench::new(BUDGET_MAX);
        let token: &[u8] = b"0123456789abcdef";
        // A 200 KiB PUT without the token whose body never comes (only its
        // first kilobyte): the 401 comes at once all the same.
        let mut data = b"PUT /config HTTP/1.1\r\nContent-Length: 204800\r\n\r\n".to_vec();
        data.extend_from_slice(&[b'#'; 1024]);
        let h = b.connect(40000);
        let mut conns = [(h, data, 0, Vec::new())];
        b.exchange(&mut conns, Some(token), 200);
        assert!(status(&conns[0].3).starts_with("HTTP/1.1 401"), "{:?}", status(&conns[0].3));
        assert_eq!(b.mgmt.counters.unauthorized, 1);
        assert!(b.handed.is_empty(), "nothing was handed out");
        // No body was buffered: only the header's bytes were ever held.
        assert!(b.peak <= MAX_HEADER + 4, "{} bytes held for a refused request", b.peak);
        assert!(!matches!(b.client.tcp_state(h), State::Established), "the connection is closed");
        assert_eq!(b.budget.used(), 0, "every charge given back");
        // With the token, the same request is read whole and handed out.
        let mut data = alloc::format!(
            "PUT /config HTTP/1.1\r\nAuthorization: Bearer 0123456789abcdef\r\nContent-Length: {}\r\n\r\n",
            150 * 1024
        )
        .into_bytes();
        data.extend_from_slice(&[b'#'; 150 * 1024]);
        let h = b.connect(40001);
        let mut conns = [(h, data, 0, Vec::new())];
        b.exchange(&mut conns, Some(token), 2000);
        assert!(status(&conns[0].3).starts_with("HTTP/1.1 200"), "{:?}", status(&conns[0].3));
        assert_eq!(b.handed, [(String::from("PUT"), String::from("/config"), 150 * 1024)]);
        assert_eq!(b.budget.used(), 0);
    }

    #[test]
    fn access_is_checked_before_the_size_so_strangers_get_401_not_413() {
        let mut b = Bench::new(BUDGET_MAX);
        let token: &[u8] = b"0123456789abcdef";
        let huge = "PUT /config HTTP/1.1\r\nContent-Length: 300000\r\n\r\n";
        let h = b.connect(43000);
        let mut conns = [(h, huge.as_bytes().to_vec(), 0, Vec::new())];
        b.exchange(&mut conns, Some(token), 100);
        assert!(status(&conns[0].3).starts_with("HTTP/1.1 401"), "{:?}", status(&conns[0].3));
        let huge = "PUT /config HTTP/1.1\r\nAuthorization: Bearer 0123456789abcdef\r\nContent-Length: 300000\r\n\r\n";
        let h = b.connect(43001);
        let mut conns = [(h, huge.as_bytes().to_vec(), 0, Vec::new())];
        b.exchange(&mut conns, Some(token), 100);
        assert!(status(&conns[0].3).starts_with("HTTP/1.1 413"), "{:?}", status(&conns[0].3));
        assert_eq!((b.mgmt.counters.unauthorized, b.mgmt.counters.rejected), (1, 1));
    }

    #[test]
    fn management_buffers_stay_within_the_budget_and_the_rest_get_503() {
        // Room for one 200 KiB request, not two.
        let limit = 300 * 1024;
        let mut b = Bench::new(limit);
        let token: &[u8] = b"0123456789abcdef";
        let mut conns = Vec::new();
        for i in 0..4u16 {
            let mut data = alloc::format!(
                "PUT /config HTTP/1.1\r\nAuthorization: Bearer 0123456789abcdef\r\nContent-Length: {}\r\n\r\n",
                200 * 1024
            )
            .into_bytes();
            data.extend_from_slice(&[b'#'; 200 * 1024]);
            conns.push((b.connect(41000 + i), data, 0, Vec::new()));
        }
        b.exchange(&mut conns, Some(token), 3000);
        let statuses: Vec<&str> = conns.iter().map(|c| status(&c.3)).collect();
        let ok = statuses.iter().filter(|s| s.starts_with("HTTP/1.1 200")).count();
        let busy = statuses.iter().filter(|s| s.starts_with("HTTP/1.1 503")).count();
        assert!(ok >= 1 && busy >= 1 && ok + busy == 4, "{statuses:?}");
        assert!(b.peak <= limit, "the budget held {} bytes, over its {limit}", b.peak);
        assert_eq!(b.mgmt.counters.over_budget as usize, busy);
        assert_eq!(b.budget.used(), 0, "every charge given back");
        // Once the budget is free again, a request gets through.
        let mut data = b"GET /health HTTP/1.1\r\n\r\n".to_vec();
        data.truncate(data.len());
        let h = b.connect(41010);
        let mut conns = [(h, data, 0, Vec::new())];
        b.exchange(&mut conns, Some(token), 200);
        assert!(status(&conns[0].3).starts_with("HTTP/1.1 200"), "{:?}", status(&conns[0].3));
    }

    #[test]
    fn a_source_that_draws_401s_fast_is_reset_unanswered() {
        let mut b = Bench::new(BUDGET_MAX);
        let token: &[u8] = b"0123456789abcdef";
        let mut answered = 0;
        for i in 0..20u16 {
            let h = b.connect(42000 + i);
            let mut conns = [(h, b"GET /config HTTP/1.1\r\n\r\n".to_vec(), 0, Vec::new())];
            b.exchange(&mut conns, Some(token), 100);
            if status(&conns[0].3).starts_with("HTTP/1.1 401") {
                answered += 1;
            }
        }
        // 20 tries within 2 s of bench time: the burst and a refill or two.
        assert!(answered >= UNAUTHORIZED_BURST as usize && answered < 20, "{answered} 401s");
        assert_eq!(b.mgmt.counters.rate_limited as usize, 20 - answered);
        assert_eq!(b.mgmt.counters.unauthorized, 20);
        assert_eq!(b.budget.used(), 0);
    }

    #[test]
    fn short_tokens_are_refused_with_their_length() {
        assert_eq!(
            check_token(b"0123456789abcde").unwrap_err().split(':').next(),
            Some("the management token is 15 bytes")
        );
        assert!(check_token(b"0123456789abcdef").is_ok());
    }

    #[test]
    fn without_a_token_reloads_traces_and_captures_are_refused() {
        let open = Access { token: None, metrics_open: false };
        for (m, p, st) in [
            ("GET", "/metrics", None),
            ("GET", "/show/ports", None),
            ("GET", "/trace", None),
            ("PUT", "/config", Some(403)),
            ("POST", "/trace?count=5", Some(403)),
            ("GET", "/capture?port=lan", Some(403)),
            ("GET", "/capture", Some(403)),
        ] {
            assert_eq!(open.check(m, p, None).err().map(|r| r.status), st, "{m} {p}");
        }
    }

    #[test]
    fn response_format() {
        let b = response_bytes(&Response::text(404, "no\n"));
        assert_eq!(b, b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\nConnection: close\r\n\r\nno\n");
    }
}
