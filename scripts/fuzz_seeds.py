#!/usr/bin/env python3
"""Writes the fuzzers' starting inputs (real frames, configs, requests).

Frames follow vnfs/fuzz's record format: a config selector byte, then per
burst (port, time step, count-1) and per frame (length/7, bytes), each
frame padded to a multiple of 7 bytes (Ethernet padding)."""
import os
import struct
import sys

LAN, WAN, MGMT = bytes.fromhex("525400000001"), bytes.fromhex("525400000002"), bytes.fromhex("525400000003")
PEER = bytes.fromhex("020000000002")


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def ip(a):
    return bytes(int(x) for x in a.split("."))


def ipv4(src, dst, proto, payload, ttl=64, df=True):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0x4000 if df else 0, ttl, proto, 0, ip(src), ip(dst))
    return h[:10] + struct.pack("!H", csum(h)) + h[12:] + payload


def l4(src, dst, proto, body):
    pseudo = ip(src) + ip(dst) + struct.pack("!BBH", 0, proto, len(body))
    c = csum(pseudo + body)
    at = 16 if proto == 6 else 6
    return body[:at] + struct.pack("!H", c) + body[at + 2:]


def udp(src, sport, dst, dport, data=b"hello"):
    body = struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data
    return ipv4(src, dst, 17, l4(src, dst, 17, body))


def tcp(src, sport, dst, dport, flags):
    body = struct.pack("!HHIIBBHHH", sport, dport, 1000, 0, 0x50, flags, 65535, 0, 0)
    return ipv4(src, dst, 6, l4(src, dst, 6, body))


def icmp_echo(src, dst):
    body = struct.pack("!BBHHH", 8, 0, 0, 7, 1) + b"ping"
    body = body[:2] + struct.pack("!H", csum(body)) + body[4:]
    return ipv4(src, dst, 1, body)


def eth(dst, payload, ethertype=0x0800):
    return dst + PEER + struct.pack("!H", ethertype) + payload


def ip6(a):
    import ipaddress
    return ipaddress.IPv6Address(a).packed


def csum6(src, dst, nh, body):
    return csum(ip6(src) + ip6(dst) + struct.pack("!IxxxB", len(body), nh) + body)


def ipv6(src, dst, nh, payload, hops=64):
    return struct.pack("!IHBB", 0x60000000, len(payload), nh, hops) + ip6(src) + ip6(dst) + payload


def icmp6(src, dst, typ, code, rest, hops=64):
    body = struct.pack("!BBH", typ, code, 0) + rest
    c = csum6(src, dst, 58, body)
    body = body[:2] + struct.pack("!H", c) + body[4:]
    return ipv6(src, dst, 58, body, hops)


def eth6(dst, payload):
    return eth(dst, payload, 0x86DD)


def tagged(frame, tags):
    """`frame` with VLAN tags [(TPID, VID)...] after its MAC addresses."""
    return frame[:12] + b"".join(struct.pack("!HH", tpid, vid) for tpid, vid in tags) + frame[12:]


def arp(sender, target):
    return eth(b"\xff" * 6, struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, PEER, ip(sender), b"\0" * 6, ip(target)), 0x0806)


def record(frames):
    out = b""
    for f in frames:
        f += b"\0" * (-len(f) % 7)
        out += bytes([len(f) // 7]) + f
    return out


def burst(port, step, frames):
    return bytes([port, step, len(frames) - 1]) + record(frames)


def frag(packet, cuts):
    """IPv4 `packet` cut into fragments at payload offsets `cuts` (multiples of 8)."""
    hl = (packet[0] & 15) * 4
    head, payload = packet[:hl], packet[hl:]
    bounds = [0] + [c for c in cuts if 0 < c < len(payload)] + [len(payload)]
    out = []
    for a, b in zip(bounds, bounds[1:]):
        flags = (0x2000 if b < len(payload) else 0) | (a // 8)
        h = head[:2] + struct.pack("!H", hl + b - a) + head[4:6] + struct.pack("!H", flags) + head[8:10] + b"\0\0" + head[12:]
        h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
        out.append(h + payload[a:b])
    return out


def acl_burst(port, step, frames):
    """A burst in the ACL target's format: per frame (length/7, chunk, bytes)."""
    out = bytes([port, step, len(frames) - 1])
    for f, chunk in frames:
        f += b"\0" * (-len(f) % 7)
        out += bytes([len(f) // 7, chunk]) + f
    return out


def icmp_error(src, dst, quoted):
    body = struct.pack("!BBHI", 3, 3, 0, 0) + quoted[:28]
    body = body[:2] + struct.pack("!H", csum(body)) + body[4:]
    return ipv4(src, dst, 1, body)


def main(out):
    seeds = {
        "arp-ping": [burst(0, 0, [arp("10.0.0.2", "10.0.0.1"), eth(LAN, icmp_echo("10.0.0.2", "10.0.0.1"))])],
        "nat-out-in": [
            burst(1, 0, [arp("10.1.0.254", "10.1.0.1")]),
            burst(0, 1, [eth(LAN, udp("10.0.0.2", 5000, "198.51.100.7", 53)), eth(LAN, tcp("10.0.0.2", 40000, "198.51.100.7", 80, 0x02))]),
            burst(1, 1, [eth(WAN, udp("198.51.100.7", 53, "10.1.0.1", 5000)), eth(WAN, tcp("198.51.100.7", 80, "10.1.0.1", 40000, 0x12))]),
        ],
        "forward": [burst(1, 0, [eth(WAN, tcp("198.51.100.9", 3333, "10.1.0.1", 8080, 0x02)), eth(WAN, udp("198.51.100.9", 3333, "10.1.0.5", 53))])],
        "lb-vip": [
            burst(0, 0, [arp("10.0.0.11", "10.0.0.1")]),
            burst(1, 0, [eth(WAN, tcp("10.1.0.77", 4000, "10.1.0.9", 80, 0x02)), eth(WAN, udp("10.1.0.77", 4001, "10.1.0.9", 53))]),
            burst(0, 2, [eth(LAN, tcp("10.0.0.11", 8000, "10.0.0.1", 4000, 0x12))]),
        ],
        "ttl-frag": [burst(0, 0, [eth(LAN, ipv4("10.0.0.2", "198.51.100.7", 17, b"x" * 1400, ttl=1, df=False)), eth(LAN, ipv4("10.0.0.2", "198.51.100.7", 17, b"y" * 1200, df=False))])],
        "ipv6-nd-ping-route": [
            burst(0, 0, [
                eth6(b"\x33\x33\xff\x00\x00\x01", icmp6("2001:db8:0:1::2", "ff02::1:ff00:1", 135, 0, b"\0" * 4 + ip6("2001:db8:0:1::1") + b"\x01\x01" + PEER, 255)),
                eth6(LAN, icmp6("2001:db8:0:1::2", "2001:db8:0:1::1", 128, 0, b"\x00\x01\x00\x01ping")),
                eth6(LAN, ipv6("2001:db8:0:1::2", "2001:db8:0:2::5", 17, struct.pack("!HHHH", 4000, 53, 12, 0) + b"abcd")),
                eth6(LAN, ipv6("2001:db8:0:1::2", "2001:db8:77::5", 17, struct.pack("!HHHH", 4000, 53, 12, 0) + b"abcd", hops=1)),
                eth6(LAN, ipv6("2001:db8:0:1::2", "2001:db8:0:2::5", 60, b"\x3c\x00\x01\x04\x00\x00\x00\x00" * 3 + b"\x11\x00\x01\x04\x00\x00\x00\x00")),
            ]),
            burst(0, 1, [
                eth6(LAN, ipv6("2001:db8:0:1::2", "64:ff9b:1::a01:2", 17, struct.pack("!HHHH", 4000, 53, 12, 0x1234) + b"abcd")),
                eth6(LAN, icmp6("2001:db8:0:1::2", "64:ff9b:1::a01:2", 128, 0, b"\x00\x07\x00\x01ping")),
            ]),
            burst(1, 2, [eth(WAN, udp("10.1.0.2", 53, "10.1.0.1", 2000)), eth(WAN, icmp_echo("10.1.0.2", "10.1.0.1"))]),
            burst(0, 1, [eth6(LAN, ipv6("2001:db8:0:1::2", "2001:db8:0:1::80", 6, struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, 0x50, 0x02, 1000, 0, 0)))]),
            burst(1, 1, [eth6(WAN, icmp6("2001:db8:0:2::5", "2001:db8:0:2::1", 136, 0, b"\x60\0\0\0" + ip6("2001:db8:0:2::5") + b"\x02\x01" + PEER, 255))]),
        ],
        "vlan-qinq": [burst(0, 0, [
            tagged(arp("10.7.0.2", "10.7.0.1"), [(0x8100, 7)]),
            tagged(eth(LAN, icmp_echo("10.7.0.2", "10.7.0.1")), [(0x8100, 7)]),
            tagged(eth(LAN, udp("10.7.0.2", 4000, "10.8.0.2", 53)), [(0x88a8, 20), (0x8100, 8)]),
            tagged(eth(LAN, udp("10.7.0.2", 4000, "198.51.100.7", 53)), [(0x8100, 300)]),
        ])],
        "tunnels": [
            burst(1, 0, [arp("10.1.0.2", "10.1.0.1")]),
            burst(1, 1, [
                eth(WAN, udp("10.1.0.2", 40000, "10.1.0.1", 4789, b"\x08\0\0\0" + struct.pack("!I", 5001 << 8) + arp("10.0.0.2", "10.0.0.1"))),
                eth(WAN, udp("10.1.0.2", 40000, "10.1.0.1", 4789, b"\x08\0\0\0" + struct.pack("!I", 5001 << 8) + eth(b"\x02\x53\x00\x13\x89\x03", udp("10.0.0.2", 1000, "198.51.100.7", 53)))),
                eth(WAN, udp("10.1.0.4", 6081, "10.1.0.1", 6081, b"\x02\x00\x65\x58" + struct.pack("!I", 77 << 8) + b"\x01\x08\x01\x01\xde\xad\xbe\xef" + eth(LAN, icmp_echo("10.6.0.2", "10.6.0.1")))),
                eth(WAN, udp("10.1.0.50", 6081, "10.1.0.1", 6081, b"\x01\x40\x65\x58" + struct.pack("!I", 78 << 8) + b"\x01\x08\x01\x01" + eth(LAN, udp("192.0.2.1", 5, "192.0.2.2", 80)))),
            ]),
        ],
        "spoof": [burst(0, 0, [eth(LAN, icmp_echo("10.9.0.1", "10.1.0.2")), eth(MGMT, icmp_echo("10.0.0.9", "10.9.0.1"))])],
    }
    os.makedirs(f"{out}/frames", exist_ok=True)
    for i, (name, bursts) in enumerate(seeds.items()):
        with open(f"{out}/frames/{name}", "wb") as f:
            f.write(bytes([i * 37 % 256]) + b"".join(bursts))
    syn22 = tcp("10.0.0.2", 40000, "10.1.0.2", 22, 0x02)
    big = ipv4("10.0.0.2", "10.1.0.2", 17, l4("10.0.0.2", "10.1.0.2", 17, struct.pack("!HHHH", 5000, 53, 8 + 300, 0) + b"q" * 300), df=False)
    query = udp("10.0.0.2", 5000, "10.1.0.2", 53)
    acl = {
        "tiny-fragments": [acl_burst(0, 0, [(eth(LAN, f), 0) for f in frag(syn22, [8])])],
        "fragments-in-order-and-not": [
            acl_burst(0, 0, [(eth(LAN, f), 0) for f in frag(big, [64, 128])]),
            acl_burst(0, 1, [(eth(LAN, f), 0) for f in reversed(frag(big, [64, 128]))]),
        ],
        "conntrack-related": [
            acl_burst(0, 0, [(eth(LAN, query), 0), (eth(LAN, tcp("10.0.0.2", 40001, "10.1.0.2", 443, 0x02)), 0)]),
            acl_burst(1, 1, [
                (eth(WAN, udp("10.1.0.2", 53, "10.0.0.2", 5000)), 0),
                (eth(WAN, tcp("10.1.0.2", 443, "10.0.0.2", 40001, 0x12)), 0),
                (eth(WAN, icmp_error("10.1.0.2", "10.0.0.2", query)), 0),
                (eth(WAN, icmp_error("10.1.0.2", "10.0.0.3", query)), 0),
            ]),
        ],
        "syn-flood": [acl_burst(1, 0, [(eth(WAN, tcp("10.1.0.%d" % (100 + i), 1000 + i, "10.0.0.2", 80, 0x02)), 0) for i in range(20)])],
        "chained": [acl_burst(0, 0, [(eth(LAN, big), 16), (eth(LAN, big), 2), (eth(LAN, tcp("10.0.0.2", 40002, "10.1.0.2", 445, 0x10) + b"x" * 100), 20)])],
    }
    os.makedirs(f"{out}/acl", exist_ok=True)
    for i, (name, bursts) in enumerate(acl.items()):
        with open(f"{out}/acl/{name}", "wb") as f:
            f.write(bytes([i * 3 % 256]) + b"".join(bursts))
    os.makedirs(f"{out}/config", exist_ok=True)
    for name in os.listdir("images/configs"):
        with open(f"images/configs/{name}", "rb") as src, open(f"{out}/config/{name}", "wb") as dst:
            dst.write(src.read())
    with open(f"{out}/config/nested", "w") as f:
        f.write("port lan {\n address 10.0.0.1/24\n}\nservice a { vip 10.0.0.9:80; backend 10.0.0.2:80 weight 0; interval 500ms }\n")
    os.makedirs(f"{out}/mgmt", exist_ok=True)
    reqs = {
        "get": b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer fuzz-token\r\n\r\n",
        "put": b"PUT /config HTTP/1.1\r\nContent-Length: 30\r\n\r\nport lan address 10.0.0.1/24\n\n",
        "health": b"GET /health HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n",
    }
    for name, r in reqs.items():
        with open(f"{out}/mgmt/{name}", "wb") as f:
            f.write(r)


if __name__ == "__main__":
    main(sys.argv[1])
