#!/usr/bin/env python3
"""Accepts one TCP connection on ADDR PORT, reads until the peer shuts its
side, and answers with "<bytes> <sha256>" of what it read."""
import hashlib
import socket
import sys

addr, port = sys.argv[1], int(sys.argv[2])
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((addr, port))
srv.listen(1)
conn, _ = srv.accept()
h, n = hashlib.sha256(), 0
while True:
    b = conn.recv(1 << 20)
    if not b:
        break
    h.update(b)
    n += len(b)
conn.sendall(f"{n} {h.hexdigest()}\n".encode())
conn.close()
