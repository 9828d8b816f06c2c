#!/usr/bin/env python3
"""Malformed frames into an interface: `garbage.py IFACE DST_MAC SECONDS`
sends, ten times a second, a frame of random bytes, a truncated IPv4 header,
an IPv4 header with a bad checksum, a TCP header cut short and an ARP
packet too short, all to DST_MAC; prints how many it sent."""
import os
import socket
import sys
import time

iface, dst, secs = sys.argv[1], bytes.fromhex(sys.argv[2].replace(":", "")), float(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
src = bytes.fromhex("020000000099")
ip_ok = bytes.fromhex("4500001c000100004011") + b"\0\0" + bytes([10, 0, 0, 2, 10, 1, 0, 2])
frames = [
    lambda: dst + src + os.urandom(2) + os.urandom(50),
    lambda: dst + src + b"\x08\x00" + ip_ok[:12],
    lambda: dst + src + b"\x08\x00" + ip_ok + b"\0" * 8,
    lambda: dst + src + b"\x08\x00" + bytes.fromhex("45000018000100004006") + b"\xbe\xef" + bytes([10, 0, 0, 2, 10, 1, 0, 2]) + b"\x00\x50",
    lambda: dst + src + b"\x08\x06" + b"\x00\x01\x08\x00\x06",
]
n = 0
end = time.time() + secs
while time.time() < end:
    for f in frames:
        s.send(f())
        n += 1
    time.sleep(0.1)
print(f"sent {n}")
