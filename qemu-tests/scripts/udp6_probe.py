#!/usr/bin/env python3
"""IPv6 UDP client for the NAT64 test: `udp6_probe.py SERVER PORT CLOSED [ECHO]`.
Asks SERVER:PORT (prints `answer: TEXT`), then sends to SERVER:CLOSED on
a connected socket: an ICMPv6 port unreachable whose quote matches the
socket makes the next receive fail (prints `closed: refused`). With ECHO,
sends 3000 bytes to an echo server there (fragments both ways) and prints
`big: ok` when the same bytes come back."""
import socket
import sys

server, port, closed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.settimeout(2)
answer = None
for _ in range(5):
    s.sendto(b"hello", (server, port))
    try:
        answer = s.recvfrom(2048)[0].decode()
        break
    except socket.timeout:
        continue
print(f"answer: {answer}")
c = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
c.settimeout(2)
c.connect((server, closed))
result = "silent"
for _ in range(3):
    c.send(b"anyone?")
    try:
        c.recv(2048)
        result = "answered"
    except ConnectionRefusedError:
        result = "refused"
        break
    except socket.timeout:
        continue
print(f"closed: {result}")

if len(sys.argv) > 4:
    e = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    e.settimeout(2)
    data = bytes(i % 251 for i in range(3000))
    result = "none"
    for _ in range(5):
        e.sendto(data, (server, int(sys.argv[4])))
        try:
            back = e.recvfrom(65536)[0]
            result = "ok" if back == data else f"different ({len(back)} bytes)"
            break
        except socket.timeout:
            continue
    print(f"big: {result}")
