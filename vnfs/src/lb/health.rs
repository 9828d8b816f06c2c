//! Backend health checks, run from the appliance's own host stack: a TCP
//! connect, or an HTTP GET of a path expecting a 2xx status. One check per
//! backend at a time, every `interval`, failing after `timeout`.

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::State;

use super::CheckKind;
use crate::packet::PortId;
use crate::stage::StageContext;
use crate::Micros;

#[derive(Debug)]
struct Probe {
    handle: SocketHandle,
    started: Micros,
    sent: bool,
    response: heapless::Vec<u8, 16>,
}

/// The check state of one backend.
#[derive(Debug, Default)]
pub struct Health {
    /// Consecutive successes and failures.
    pub successes: u32,
    pub failures: u32,
    pub total_ok: u64,
    pub total_failed: u64,
    next_at: Micros,
    probe: Option<Probe>,
    seq: u16,
}

/// Whether an HTTP response's status line says 2xx.
fn http_ok(resp: &[u8]) -> Option<bool> {
    // "HTTP/1.x NNN"
    if resp.len() < 12 {
        return None;
    }
    Some(resp.starts_with(b"HTTP/1.") && resp[9] == b'2')
}

impl Health {
    /// Gives up the check in flight (its backend is gone): the socket, for
    /// the caller to close.
    pub fn abandon(&mut self) -> Option<SocketHandle> {
        self.probe.take().map(|p| p.handle)
    }

    /// Advances the check; returns its result when one completes.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        cx: &mut StageContext<'_>,
        check: &CheckKind,
        (addr, tcp_port): (core::net::IpAddr, u16),
        port: PortId,
        local_base: u16,
        interval: Micros,
        timeout: Micros,
    ) -> Option<bool> {
        let now = cx.now;
        let host = cx.host(port)?;
        let result = match &mut self.probe {
            None => {
                if now < self.next_at {
                    return None;
                }
                self.seq = self.seq.wrapping_add(1);
                // A new source port each time, not reused for 256 checks:
                // the backend keeps each closed connection in TIME-WAIT for
                // a minute, and a SYN that meets one is answered late.
                let local = local_base + self.seq % 256;
                match host.tcp_open((addr, tcp_port), local) {
                    Some(handle) => {
                        self.probe = Some(Probe { handle, started: now, sent: false, response: heapless::Vec::new() });
                        return None;
                    }
                    None => Some(false),
                }
            }
            Some(p) => {
                let state = host.tcp_state(p.handle);
                let mut buf = [0u8; 16];
                let n = host.tcp_recv(p.handle, &mut buf[..16 - p.response.len()]);
                let _ = p.response.extend_from_slice(&buf[..n]);
                match check {
                    CheckKind::Tcp if state == State::Established => Some(true),
                    CheckKind::Http(path) => {
                        if state == State::Established && !p.sent {
                            let mut req: heapless::String<256> = heapless::String::new();
                            let _ = core::fmt::write(
                                &mut req,
                                format_args!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", super::v6::host_header(addr)),
                            );
                            p.sent = host.tcp_send(p.handle, req.as_bytes());
                        }
                        match http_ok(&p.response) {
                            Some(ok) => Some(ok),
                            None if matches!(state, State::Closed | State::TimeWait) => Some(false),
                            None => None,
                        }
                    }
                    _ if state == State::Closed => Some(false),
                    _ => None,
                }
                .or_else(|| (now.saturating_sub(p.started) >= timeout).then_some(false))
            }
        };
        let result = result?;
        if let Some(p) = self.probe.take() {
            host.tcp_close(p.handle);
            self.next_at = p.started + interval;
        } else {
            self.next_at = now + interval;
        }
        if result {
            self.successes += 1;
            self.failures = 0;
            self.total_ok += 1;
        } else {
            self.failures += 1;
            self.successes = 0;
            self.total_failed += 1;
        }
        Some(result)
    }
}

#[cfg(test)]
mod tests {
    use super::http_ok;

    #[test]
    fn status_lines() {
        assert_eq!(http_ok(b"HTTP/1.0 200 OK\r\n"), Some(true));
        assert_eq!(http_ok(b"HTTP/1.1 204 No"), Some(true));
        assert_eq!(http_ok(b"HTTP/1.0 503 Ser"), Some(false));
        assert_eq!(http_ok(b"SSH-2.0-OpenSSH"), Some(false));
        assert_eq!(http_ok(b"HTTP/1.0"), None);
    }
}
