#!/usr/bin/env python3
"""UDP server answering each datagram with `NAME saw ADDR:PORT`:
`udp_echo.py BIND_ADDR PORT NAME`."""
import socket
import sys

bind, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((bind, port))
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(f"{name} saw {peer[0]}:{peer[1]}".encode(), peer)
