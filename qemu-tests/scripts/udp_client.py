#!/usr/bin/env python3
"""UDP client for the NAT tests.

  udp_client.py SRC_PORT SERVER:PORT [SERVER:PORT ...]
      from one source port, ask every server; print each answer
  udp_client.py --flows N FIRST_SRC_PORT SERVER:PORT
      open N flows (source ports FIRST..FIRST+N-1), one datagram each, then
      ask again on the first flow; print `first: ANSWER` or `first: none`
"""
import socket
import sys


def ask(sock, server, timeout=2.0, tries=3):
    host, port = server.rsplit(":", 1)
    sock.settimeout(timeout)
    for _ in range(tries):
        sock.sendto(b"hello", (host, int(port)))
        try:
            data, _ = sock.recvfrom(2048)
            return data.decode()
        except socket.timeout:
            continue
    return None


if sys.argv[1] == "--flows":
    n, first, server = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    socks = []
    host, port = server.rsplit(":", 1)
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", first + i))
        s.sendto(b"open", (host, int(port)))
        socks.append(s)
    # Drain what came back for the first flow, then ask again.
    socks[0].settimeout(0.5)
    try:
        while True:
            socks[0].recvfrom(2048)
    except socket.timeout:
        pass
    print("first:", ask(socks[0], server) or "none")
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", int(sys.argv[1])))
    for server in sys.argv[2:]:
        print(ask(s, server) or f"no answer from {server}")
