#!/usr/bin/env python3
"""One UDP flow that goes on: `udp_steady.py SRC_PORT SERVER:PORT SECONDS`
sends a datagram every 0.2 s from one source port and prints
`sent N answered M ports P` (P: the distinct source ports the server saw,
from its `NAME saw ADDR:PORT` answers)."""
import socket
import sys
import time

src, server, secs = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
host, port = server.rsplit(":", 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", src))
s.settimeout(0.5)
sent = answered = 0
seen = set()
end = time.time() + secs
while time.time() < end:
    s.sendto(b"steady", (host, int(port)))
    sent += 1
    try:
        data, _ = s.recvfrom(2048)
        answered += 1
        seen.add(data.decode().rsplit(":", 1)[1])
    except socket.timeout:
        pass
    time.sleep(0.2)
print(f"sent {sent} answered {answered} ports {len(seen)}")
