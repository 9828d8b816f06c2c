#!/usr/bin/env python3
"""HTTP server that answers every GET with its own name and the client
address it saw: `whoami_http.py BIND_ADDR PORT NAME`. Used by the qemu-tests
to see what a NAT or load balancer did to the source."""
import http.server
import sys

bind, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{name} saw {self.client_address[0]}:{self.client_address[1]}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer((bind, port), Handler).serve_forever()
