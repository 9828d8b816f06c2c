#!/usr/bin/env python3
"""HTTP server that answers every GET with its own name and the client
address it saw: `whoami_http.py BIND_ADDR PORT NAME`. `/slow` streams 20
lines over about four seconds (a long-lived connection), `/slow?n=N` N lines. Used by the
qemu-tests to see what a NAT or load balancer did."""
import http.server
import socket
import sys
import time

bind, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        if self.path.startswith("/slow"):
            # /slow streams 20 lines, /slow?n=N streams N (0.2 s apart).
            n = int(self.path.split("n=", 1)[1]) if "n=" in self.path else 20
            self.send_response(200)
            self.end_headers()
            for i in range(n):
                self.wfile.write(f"{name} chunk {i}\n".encode())
                self.wfile.flush()
                time.sleep(0.2)
            return
        body = f"{name} saw {self.client_address[0]}:{self.client_address[1]}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    # An IPv6 bind address needs an IPv6 socket.
    address_family = socket.AF_INET6 if ":" in bind else socket.AF_INET


Server((bind, port), Handler).serve_forever()
