#!/usr/bin/env python3
"""Call setup over rtpengine's ng control protocol: offer + answer + delete per second.

A small ng client (Python 3 standard library only) that works against any ng speaker, so
mcvideo-relay and rtpengine can be measured with the same client:

    benches/scripts/ng-bench.py 127.0.0.1:22230 --calls 2000 --concurrency 8
    benches/scripts/ng-bench.py 127.0.0.1:22230 --ping 20000

Each cycle sends `offer` (an SDP with one H.264 video stream and a=rtcp-mux, its own Call-ID
and from-tag), `answer` (the callee's SDP, its own to-tag) and `delete`, one after another;
K cycles are in flight at once over one UDP socket (replies matched by cookie). A request not
answered within --timeout is sent again with the same cookie (the server's reply cache makes
that safe). Prints calls/s and the p50/p99 of a whole cycle; --json for machine output.
"""

import argparse
import json
import os
import selectors
import socket
import sys
import time


# --- bencode, by hand ---------------------------------------------------------------------

def benc(v):
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, str):
        v = v.encode()
    if isinstance(v, bytes):
        return b"%d:%s" % (len(v), v)
    if isinstance(v, list):
        return b"l" + b"".join(benc(x) for x in v) + b"e"
    if isinstance(v, dict):
        out = [b"d"]
        for k in sorted(v, key=lambda k: k.encode() if isinstance(k, str) else k):
            out.append(benc(k))
            out.append(benc(v[k]))
        out.append(b"e")
        return b"".join(out)
    raise TypeError(type(v))


def bdec(b, i=0):
    """Decode one value at b[i:]; returns (value, next index). Strings come back as str."""
    c = b[i:i + 1]
    if c == b"i":
        e = b.index(b"e", i)
        return int(b[i + 1:e]), e + 1
    if c == b"l":
        i += 1
        out = []
        while b[i:i + 1] != b"e":
            v, i = bdec(b, i)
            out.append(v)
        return out, i + 1
    if c == b"d":
        i += 1
        out = {}
        while b[i:i + 1] != b"e":
            k, i = bdec(b, i)
            v, i = bdec(b, i)
            out[k] = v
        return out, i + 1
    if c.isdigit():
        colon = b.index(b":", i)
        n = int(b[i:colon])
        s = b[colon + 1:colon + 1 + n]
        if len(s) != n:
            raise ValueError("short string")
        return s.decode("utf-8", "replace"), colon + 1 + n
    raise ValueError("bad bencode at %d" % i)


# --- the client ---------------------------------------------------------------------------

def sdp(name, sess, port):
    return (
        "v=0\r\n"
        "o=%s %d 1 IN IP4 127.0.0.1\r\n"
        "s=-\r\n"
        "c=IN IP4 127.0.0.1\r\n"
        "t=0 0\r\n"
        "m=video %d RTP/AVP 96\r\n"
        "a=rtpmap:96 H264/90000\r\n"
        "a=fmtp:96 packetization-mode=1\r\n"
        "a=rtcp-mux\r\n"
        "a=sendrecv\r\n" % (name, sess, port)
    )


class Failure(Exception):
    pass


class Bench:
    def __init__(self, addr, timeout, retries):
        self.addr = addr
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.connect(addr)
        self.sock.setblocking(False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.sock, selectors.EVENT_READ)
        self.timeout = timeout
        self.retries = retries
        self.prefix = "%x%x" % (os.getpid(), int(time.time()) & 0xFFFF)
        self.seq = 0
        self.pending = {}  # cookie -> [datagram, deadline, tries, callback]
        self.retransmits = 0

    def send(self, cmd, cb):
        self.seq += 1
        cookie = "%s_%d" % (self.prefix, self.seq)
        dgram = cookie.encode() + b" " + benc(cmd)
        self.pending[cookie] = [dgram, time.monotonic() + self.timeout, 1, cb]
        self.sock.send(dgram)

    def pump(self):
        """Wait for replies (or timeouts) and run their callbacks."""
        now = time.monotonic()
        wait = min(p[1] for p in self.pending.values()) - now if self.pending else 0.1
        if wait > 0:
            self.sel.select(wait)
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                break
            except ConnectionRefusedError:
                raise Failure("nothing listening on %s:%d" % self.addr)
            sp = data.find(b" ")
            if sp < 0:
                continue
            p = self.pending.pop(data[:sp].decode("ascii", "replace"), None)
            if p is None:
                continue  # a late reply to a retransmitted request
            reply, _ = bdec(data, sp + 1)
            p[3](reply)
        now = time.monotonic()
        for cookie, p in list(self.pending.items()):
            if p[1] <= now:
                if p[2] > self.retries:
                    raise Failure("no reply after %d tries: %r" % (p[2], p[0][:120]))
                p[1] = now + self.timeout
                p[2] += 1
                self.retransmits += 1
                self.sock.send(p[0])


def check(reply, want, what):
    if not isinstance(reply, dict) or reply.get("result") != want:
        raise Failure("%s: %r" % (what, reply))


def run_calls(b, calls, concurrency):
    run = "%s" % b.prefix
    started = 0
    done = 0
    lat = []

    def start(i):
        t0 = time.monotonic()
        cid = "ngbench-%s-%d@sip.example" % (run, i)
        ftag = "ft-%s-%d" % (run, i)
        ttag = "tt-%s-%d" % (run, i)
        port = 20000 + 2 * (i % 5000)
        offer = {
            "command": "offer",
            "call-id": cid,
            "from-tag": ftag,
            "sdp": sdp("alice", i + 1, port),
            "flags": ["trust-address"],
            "replace": ["origin", "session-connection"],
        }

        def on_offer(r):
            check(r, "ok", "offer " + cid)
            if "sdp" not in r:
                raise Failure("offer without sdp: %r" % r)
            b.send({
                "command": "answer",
                "call-id": cid,
                "from-tag": ftag,
                "to-tag": ttag,
                "sdp": sdp("bob", i + 1, port + 10000),
                "flags": ["trust-address"],
                "replace": ["origin", "session-connection"],
            }, on_answer)

        def on_answer(r):
            check(r, "ok", "answer " + cid)
            b.send({"command": "delete", "call-id": cid, "from-tag": ftag}, on_delete)

        def on_delete(r):
            nonlocal done
            check(r, "ok", "delete " + cid)
            lat.append(time.monotonic() - t0)
            done += 1
            if started < calls:
                next_call()

        b.send(offer, on_offer)

    def next_call():
        nonlocal started
        i = started
        started += 1
        start(i)

    t = time.monotonic()
    for _ in range(min(concurrency, calls)):
        next_call()
    while done < calls:
        b.pump()
    return time.monotonic() - t, lat


def run_pings(b, n, concurrency):
    started = 0
    done = 0
    lat = []

    def one():
        nonlocal started
        started += 1
        t0 = time.monotonic()

        def on_pong(r):
            nonlocal done
            check(r, "pong", "ping")
            lat.append(time.monotonic() - t0)
            done += 1
            if started < n:
                one()

        b.send({"command": "ping"}, on_pong)

    t = time.monotonic()
    for _ in range(min(concurrency, n)):
        one()
    while done < n:
        b.pump()
    return time.monotonic() - t, lat


def pct(xs, p):
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, int(round(p / 100.0 * len(xs) + 0.5)) - 1))
    return xs[k]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("target", help="HOST:PORT of the ng listener")
    ap.add_argument("--calls", type=int, default=2000, help="offer+answer+delete cycles")
    ap.add_argument("--concurrency", type=int, default=1, help="cycles in flight at once")
    ap.add_argument("--ping", type=int, metavar="N", help="N ping round trips instead")
    ap.add_argument("--timeout", type=float, default=0.5, help="retransmit after (s)")
    ap.add_argument("--retries", type=int, default=5, help="retransmissions before giving up")
    ap.add_argument("--label", default="", help="a name printed with the figures")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    a = ap.parse_args()
    host, _, port = a.target.rpartition(":")
    b = Bench((host or "127.0.0.1", int(port)), a.timeout, a.retries)
    cpu0 = time.process_time()
    try:
        if a.ping:
            what, n = "ping", a.ping
            elapsed, lat = run_pings(b, n, a.concurrency)
        else:
            what, n = "offer+answer+delete", a.calls
            elapsed, lat = run_calls(b, n, a.concurrency)
    except Failure as e:
        print("ng-bench: %s" % e, file=sys.stderr)
        return 1
    except ConnectionRefusedError:
        print("ng-bench: nothing listening on %s" % a.target, file=sys.stderr)
        return 1
    cpu = time.process_time() - cpu0
    res = {
        "label": a.label,
        "target": a.target,
        "what": what,
        "n": n,
        "concurrency": a.concurrency,
        "seconds": round(elapsed, 4),
        "per_second": round(n / elapsed, 1),
        "p50_us": round(pct(lat, 50) * 1e6),
        "p99_us": round(pct(lat, 99) * 1e6),
        "retransmissions": b.retransmits,
        # the client's own CPU time over the run's wall time: near 1.0, the client is the limit
        "client_cpu_share": round(cpu / elapsed, 2),
    }
    if a.json:
        print(json.dumps(res))
    else:
        unit = "pings/s" if a.ping else "calls/s"
        print("%s%s %s: %d in %.2f s, %.0f %s, p50 %d us, p99 %d us per %s, "
              "concurrency %d, %d retransmissions, client CPU %.0f %%" % (
                  a.label + " " if a.label else "", a.target, what, n, elapsed,
                  res["per_second"], unit, res["p50_us"], res["p99_us"],
                  "round trip" if a.ping else "cycle", a.concurrency, b.retransmits,
                  100 * res["client_cpu_share"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
