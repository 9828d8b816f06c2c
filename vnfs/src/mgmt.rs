//! The management endpoint: HTTP/1.1 on the appliance's own smoltcp stack,
//! on the dedicated management port only.
//!
//! A few listening sockets (the connection limit), a size limit on requests
//! and an idle timeout per connection, so a misbehaving client cannot wedge
//! the appliance. This module speaks HTTP; the dataplane answers the
//! requests (`/metrics`, `/health`, `/config`).

use alloc::string::String;
use alloc::vec::Vec;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::State;

use crate::hoststack::HostStack;
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

/// A parsed request.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
    /// The token of an `Authorization: Bearer TOKEN` header.
    pub bearer: Option<String>,
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
    buf: Vec<u8>,
    out: Vec<u8>,
    sent: usize,
    last: Micros,
    /// When the connection opened (or the response began).
    started: Micros,
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
    }
}

pub struct Management {
    listen: u16,
    conns: Vec<Conn>,
    pub counters: MgmtCounters,
}

/// Parses a complete request from `buf`: `Ok(None)` if more bytes are needed.
///
/// Every number from the request is bounded before it is used: a
/// `Content-Length` is parsed as a decimal of at most a few digits and
/// compared with what is left of [`MAX_REQUEST`] after the header, never
/// added to anything first. A request with two `Content-Length` headers is
/// refused (RFC 9112 §6.3: conflicting lengths are unrecoverable, and
/// "the last one wins" lets a proxy and sluice disagree on where the body
/// ends).
pub fn parse_request(buf: &[u8]) -> Result<Option<Request>, (u16, &'static str)> {
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
    if length > MAX_REQUEST - body_start {
        return Err((413, "request too large\n"));
    }
    let Some(body) = buf.get(body_start..body_start + length) else {
        return Ok(None);
    };
    let bearer = authorization.and_then(|a| {
        let (scheme, token) = a.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| String::from(token.trim()))
    });
    Ok(Some(Request { method: method.into(), path: path.into(), body: body.to_vec(), bearer }))
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
    /// Opens the listening sockets on `host`.
    pub fn new(host: &mut HostStack, listen: u16) -> Management {
        let conns = (0..MAX_CONNECTIONS + 1)
            .filter_map(|_| host.tcp_listen(listen, 16 * 1024, 16 * 1024))
            .map(|handle| Conn {
                handle,
                phase: Phase::Idle,
                buf: Vec::new(),
                out: Vec::new(),
                sent: 0,
                last: 0,
                started: 0,
            })
            .collect();
        Management { listen, conns, counters: MgmtCounters::default() }
    }

    /// Moves bytes in and out; returns the requests that became complete
    /// (connection index, request) for the caller to answer with `respond`.
    pub fn poll(&mut self, host: &mut HostStack, now: Micros) -> Vec<(usize, Request)> {
        let mut ready = Vec::new();
        for (i, c) in self.conns.iter_mut().enumerate() {
            let state = host.tcp_state(c.handle);
            match c.phase {
                Phase::Idle if state != State::Listen => {
                    c.phase = Phase::Reading;
                    c.last = now;
                    c.started = now;
                    c.buf.clear();
                }
                Phase::Idle => continue,
                _ => {}
            }
            if c.phase == Phase::Reading {
                let mut chunk = [0u8; 2048];
                loop {
                    let n = host.tcp_recv(c.handle, &mut chunk);
                    if n == 0 {
                        break;
                    }
                    c.last = now;
                    if c.buf.len() + n > MAX_REQUEST {
                        c.buf.clear();
                        self.counters.rejected += 1;
                        c.out = response_bytes(&Response::text(413, "request too large\n"));
                        c.sent = 0;
                        c.started = now;
                        c.phase = Phase::Writing;
                        break;
                    }
                    c.buf.extend_from_slice(&chunk[..n]);
                }
                if c.phase == Phase::Reading {
                    match parse_request(&c.buf) {
                        Ok(Some(req)) => {
                            self.counters.requests += 1;
                            c.phase = Phase::Handling;
                            c.buf = Vec::new();
                            ready.push((i, req));
                        }
                        Ok(None) => {}
                        Err((status, why)) => {
                            self.counters.rejected += 1;
                            c.out = response_bytes(&Response::text(status, why));
                            c.sent = 0;
                            c.started = now;
                            c.phase = Phase::Writing;
                        }
                    }
                }
            }
            if c.phase == Phase::Writing && c.sent < c.out.len() {
                let n = host.tcp_send_some(c.handle, &c.out[c.sent..]);
                if n > 0 {
                    c.sent += n;
                    c.last = now;
                }
                if c.sent == c.out.len() {
                    host.tcp_finish(c.handle);
                }
            }
            let gone = matches!(state, State::Closed | State::TimeWait | State::Closing | State::LastAck)
                || c.phase == Phase::Writing && c.sent == c.out.len() && state == State::FinWait2;
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
                c.out = Vec::new();
                c.buf = Vec::new();
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
                c.out = Vec::new();
                c.buf = Vec::new();
            }
        }
        ready
    }

    /// Queues the response to the request handed out for connection `i`.
    pub fn respond(&mut self, i: usize, r: &Response) {
        if let Some(c) = self.conns.get_mut(i) {
            c.out = response_bytes(r);
            c.sent = 0;
            c.phase = Phase::Writing;
            c.started = c.last;
        }
    }
}

fn response_bytes(r: &Response) -> Vec<u8> {
    let mut out = alloc::format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len()
    )
    .into_bytes();
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

    #[test]
    fn response_format() {
        let b = response_bytes(&Response::text(404, "no\n"));
        assert_eq!(b, b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\nConnection: close\r\n\r\nno\n");
    }
}
