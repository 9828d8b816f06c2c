#!/usr/bin/env python3
"""Hostile management clients for the hardening qemu-tests.

  mgmt_raw.py send HOST PORT REQUEST   send REQUEST (with \\r\\n escapes) as is,
                                       print the status line of the answer
  mgmt_raw.py trickle HOST PORT N SECS open N connections and send one byte
                                       of a request header every second on
                                       each for SECS seconds (slowloris)
  mgmt_raw.py flood HOST PORT N ROUNDS KIB
                                       ROUNDS rounds of N clients at once, each
                                       PUT /config with a KIB KiB body and no
                                       token; print each answer's status line
"""
import socket
import sys
import time


def send(host, port, request):
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(request.encode().decode("unicode_escape").encode("latin-1"))
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        pass
    print(data.split(b"\r\n", 1)[0].decode("latin-1"))


def trickle(host, port, n, secs):
    conns = []
    for _ in range(int(n)):
        conns.append(socket.create_connection((host, int(port)), timeout=5))
    text = b"GET /health HTTP/1.1\r\nX-Slow: " + b"a" * 10000
    end = time.time() + float(secs)
    i = 0
    while time.time() < end:
        for c in list(conns):
            try:
                c.send(text[i:i + 1])
            except OSError:
                conns.remove(c)
        i += 1
        time.sleep(1)
    print(f"{len(conns)} of {n} still open")


def put_without_token(host, port, kib, out, i):
    body = b"#" * (int(kib) * 1024)
    head = b"PUT /config HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
    status = "no answer"
    try:
        s = socket.create_connection((host, int(port)), timeout=10)
        try:
            s.sendall(head + body)
        except OSError:
            pass  # refused early: the answer may already be there
        data = b""
        try:
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        if data:
            status = data.split(b"\r\n", 1)[0].decode("latin-1")
        s.close()
    except OSError as e:
        status = f"error: {e}"
    out[i] = status


def flood(host, port, n, rounds, kib):
    import threading
    for r in range(int(rounds)):
        out = [None] * int(n)
        threads = [threading.Thread(target=put_without_token, args=(host, port, kib, out, i)) for i in range(int(n))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for s in out:
            print(f"round {r + 1}: {s}")


if __name__ == "__main__":
    if sys.argv[1] == "send":
        send(*sys.argv[2:5])
    elif sys.argv[1] == "trickle":
        trickle(*sys.argv[2:6])
    elif sys.argv[1] == "flood":
        flood(*sys.argv[2:7])
