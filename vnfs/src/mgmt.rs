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

/// Connections served at once; more get a reset from smoltcp.
pub const MAX_CONNECTIONS: usize = 4;
/// Largest request (headers and body): a config of a few thousand lines.
pub const MAX_REQUEST: usize = 256 * 1024;
const MAX_HEADER: usize = 8 * 1024;
/// A connection idle this long is dropped.
pub const IDLE_TIMEOUT: Micros = 10_000_000;

/// A parsed request.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
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
}

#[derive(Clone, Debug, Default)]
pub struct MgmtCounters {
    pub requests: u64,
    pub rejected: u64,
    pub timeouts: u64,
}

pub struct Management {
    listen: u16,
    conns: Vec<Conn>,
    pub counters: MgmtCounters,
}

/// Parses a complete request from `buf`: `Ok(None)` if more bytes are needed.
pub fn parse_request(buf: &[u8]) -> Result<Option<Request>, (u16, &'static str)> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_HEADER { Err((431, "request header too large\n")) } else { Ok(None) };
    };
    let head = core::str::from_utf8(&buf[..end]).map_err(|_| (400, "request header is not UTF-8\n"))?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let (Some(method), Some(path), Some(version)) = (first.next(), first.next(), first.next()) else {
        return Err((400, "bad request line\n"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err((505, "HTTP/1.x only\n"));
    }
    let mut length = 0usize;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().map_err(|_| (400, "bad Content-Length\n"))?;
            } else if k.trim().eq_ignore_ascii_case("transfer-encoding") {
                return Err((411, "send a Content-Length, not chunked encoding\n"));
            }
        }
    }
    if end + 4 + length > MAX_REQUEST {
        return Err((413, "request too large\n"));
    }
    if buf.len() < end + 4 + length {
        return Ok(None);
    }
    Ok(Some(Request { method: method.into(), path: path.into(), body: buf[end + 4..end + 4 + length].to_vec() }))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
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
        let conns = (0..MAX_CONNECTIONS)
            .filter_map(|_| host.tcp_listen(listen, 16 * 1024, 16 * 1024))
            .map(|handle| Conn { handle, phase: Phase::Idle, buf: Vec::new(), out: Vec::new(), sent: 0, last: 0 })
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
            let idle = now.saturating_sub(c.last) > IDLE_TIMEOUT && c.phase != Phase::Handling;
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
        ready
    }

    /// Queues the response to the request handed out for connection `i`.
    pub fn respond(&mut self, i: usize, r: &Response) {
        if let Some(c) = self.conns.get_mut(i) {
            c.out = response_bytes(r);
            c.sent = 0;
            c.phase = Phase::Writing;
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
    fn response_format() {
        let b = response_bytes(&Response::text(404, "no\n"));
        assert_eq!(b, b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\nConnection: close\r\n\r\nno\n");
    }
}
