#!/usr/bin/env python3
"""A Geneve peer as a gateway load balancer is one (RFC 8926): sends inner
Ethernet/IPv4/UDP frames to APPLIANCE:6081 in Geneve with a TLV option and
VNI, from its own UDP port 6081, and reads what comes back.

usage: geneve_peer.py LOCAL APPLIANCE VNI DPORT... 

For each destination port it sends COUNT (5) flows and prints one line:
  dport=N sent=5 back=K options-intact=K inner-intact=K
Linux has no Geneve device here (no module), so the encapsulation is built
by hand: the bytes are exactly what RFC 8926 says.
"""
import socket
import struct
import sys
import time

COUNT = 5
# One option: class 0x0108, type 0x01 (not critical), 8 bytes of data.
OPTION = struct.pack("!HBB", 0x0108, 0x01, 2) + b"\xde\xad\xbe\xef\x01\x02\x03\x04"


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def inner_frame(sport, dport, payload):
    src, dst = socket.inet_aton("192.0.2.1"), socket.inet_aton("192.0.2.2")
    udp_len = 8 + len(payload)
    pseudo = src + dst + struct.pack("!BBH", 0, 17, udp_len)
    udp = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
    udp = udp[:6] + struct.pack("!H", csum(pseudo + udp) or 0xFFFF) + udp[8:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 1, 0, 64, 17, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    eth = b"\x02\x00\x00\x00\x07\x07" + b"\x02\x00\x00\x00\x07\x08" + b"\x08\x00"
    return eth + ip + udp


def geneve(vni, inner):
    opt_len = len(OPTION) // 4
    return struct.pack("!BBHI", opt_len, 0, 0x6558, vni << 8) + OPTION + inner


def main():
    local, appliance, vni = sys.argv[1], sys.argv[2], int(sys.argv[3])
    dports = [int(p) for p in sys.argv[4:]]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((local, 6081))
    s.settimeout(0.3)
    for dport in dports:
        sent = {}
        for i in range(COUNT):
            inner = inner_frame(20000 + i, dport, b"flow %d to %d" % (i, dport))
            sent[inner] = True
            s.sendto(geneve(vni, inner), (appliance, 6081))
        back = options = intact = 0
        deadline = time.time() + 3
        while time.time() < deadline and back < COUNT:
            try:
                data, peer = s.recvfrom(4096)
            except socket.timeout:
                continue
            if peer[0] != appliance or len(data) < 8:
                continue
            opt_len = (data[0] & 0x3F) * 4
            got_vni = struct.unpack("!I", data[4:8])[0] >> 8
            if got_vni != vni:
                continue
            back += 1
            if data[8 : 8 + opt_len] == OPTION:
                options += 1
            if data[8 + opt_len :] in sent:
                intact += 1
        print("dport=%d sent=%d back=%d options-intact=%d inner-intact=%d" % (dport, COUNT, back, options, intact))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
