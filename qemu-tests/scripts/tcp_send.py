#!/usr/bin/env python3
"""Sends FILE to ADDR PORT (a tcp_sink.py) in large writes, shuts the
sending side and prints the sink's answer: "<bytes> <sha256>". Fails if
the transfer stalls for 60 s."""
import socket
import sys
import time

addr, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
# The sink may still be starting: retry the connection for 10 s.
deadline = time.monotonic() + 10
while True:
    try:
        s = socket.create_connection((addr, port), timeout=60)
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.2)
with open(path, "rb") as f:
    while True:
        chunk = f.read(1 << 20)
        if not chunk:
            break
        s.sendall(chunk)
s.shutdown(socket.SHUT_WR)
answer = b""
while not answer.endswith(b"\n"):
    b = s.recv(4096)
    if not b:
        break
    answer += b
print(answer.decode().strip())
