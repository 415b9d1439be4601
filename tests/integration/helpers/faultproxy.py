#!/usr/bin/python3
"""A fault-injecting HTTP reverse proxy for the registry integration tests.

    faultproxy.py --listen PORT --upstream HOST:PORT --rules FILE --log FILE

Every request is forwarded to the upstream registry (the Host header is kept,
so the registry builds upload URLs that point back at the proxy) unless a
rule matches.  The rules file is JSON, re-read whenever it changes (which
also resets the rule counters):

    {"rules": [
      {"method": "GET", "path": "/blobs/sha256:", "action": "reset",
       "after_bytes": 65536, "times": 1},
      {"method": "*", "path": "/manifests/", "action": "status",
       "status": 429, "retry_after": "1", "times": 1},
      {"method": "GET", "path": "/blobs/", "action": "corrupt", "times": -1}
    ]}

method: an HTTP method or "*"; path: a regular expression searched in the
request path (with query); host (optional): a regular expression matched
against the Host header; times: how often the rule fires (-1 = always).
Actions:
  status   answer STATUS (with Retry-After when given) without forwarding
  reset    GET/HEAD: forward, relay the headers and exactly after_bytes of
           the body, wait until the client has them, then reset the
           connection; with a request body (PUT/PATCH/POST): read
           after_bytes of it, then reset
  corrupt  forward, but flip one byte of the response body (same length)
  delay    sleep "seconds", then forward
  redirect answer 307 with Location http://TO_HOST:PORT/same/path, where
           TO_HOST is "to_host" (e.g. "localhost": another origin, same proxy)
  require_basic  answer 401 with a Basic challenge unless the request has
           Basic credentials (the proxy then plays a registry that wants auth)

Each request is logged as one line: METHOD PATH STATUS [RULE-ACTION]
[range=RANGE] [auth] [host=HOST], "auth" when it carried an Authorization
header, host= when the Host header is not 127.0.0.1:*.  Started and stopped by helpers/registry.bash.
"""
import argparse
import fcntl
import http.client
import json
import os
import re
import socket
import struct
import sys
import termios
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
       "trailer", "transfer-encoding", "upgrade"}


class Rules:
    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.stamp = None
        self.rules = []
        self.fired = []

    def match(self, method, path, host):
        with self.lock:
            try:
                st = os.stat(self.path)
                stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            except FileNotFoundError:
                stamp = None
            if stamp != self.stamp:
                self.stamp = stamp
                self.rules = []
                if stamp is not None:
                    with open(self.path) as f:
                        text = f.read()
                    if text.strip():
                        self.rules = json.loads(text).get("rules", [])
                self.fired = [0] * len(self.rules)
            for i, r in enumerate(self.rules):
                m = r.get("method", "*")
                if m != "*" and m != method:
                    continue
                if not re.search(r.get("path", ""), path):
                    continue
                if "host" in r and not re.search(r["host"], host):
                    continue
                times = r.get("times", -1)
                if times >= 0 and self.fired[i] >= times:
                    continue
                self.fired[i] += 1
                return r
            return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def finish(self):
        try:
            super().finish()
        except (OSError, ValueError):
            pass

    def log_line(self, status, rule=None):
        extra = ""
        if rule:
            extra += " [%s]" % rule.get("action")
        rng = self.headers.get("Range")
        if rng:
            extra += " range=%s" % rng
        if self.headers.get("Authorization"):
            extra += " auth"
        host = self.headers.get("Host", "")
        if not host.startswith("127.0.0.1:"):
            extra += " host=%s" % host
        with self.server.log_lock:
            with open(self.server.log_path, "a") as f:
                f.write("%s %s %s%s\n" % (self.command, self.path, status, extra))

    def drain(self, timeout=30.0):
        """Wait (at most timeout seconds) until the client's TCP stack has
        acknowledged everything written so far: TIOCOUTQ (alias SIOCOUTQ,
        bytes not yet acknowledged by the peer) is 0.  A reset throws away
        whatever is still queued for sending, so without this a client that
        reads slowly (a loaded machine, a sanitizer build) gets only what
        fitted in its receive window, often a quarter of after_bytes, and
        how much depends on timing."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                queued = struct.unpack("i", fcntl.ioctl(self.connection.fileno(),
                                                        termios.TIOCOUTQ, b"\0\0\0\0"))[0]
            except OSError:
                return
            if queued <= 0:
                return
            time.sleep(0.005)

    def reset(self):
        """Close the client connection with a TCP reset, once the bytes
        already written have reached the client."""
        try:
            self.wfile.flush()
        except OSError:
            pass
        self.drain()
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass
        self.close_connection = True

    def read_body(self):
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            data = b""
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length", "0") or "0")
        return self.rfile.read(n) if n else b""

    def handle_any(self):
        rule = self.server.rules.match(self.command, self.path,
                                       self.headers.get("Host", ""))
        action = rule.get("action") if rule else None
        if action == "require_basic" and \
                self.headers.get("Authorization", "").startswith("Basic "):
            action = None
        if action in ("redirect", "require_basic"):
            self.read_body()
            if action == "redirect":
                self.send_response(307)
                self.send_header("Location", "http://%s:%d%s" % (
                    rule.get("to_host", "localhost"), self.server.server_address[1], self.path))
            else:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="faultproxy"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            self.log_line(307 if action == "redirect" else 401, rule)
            return
        if action == "status":
            self.read_body()
            status = int(rule.get("status", 503))
            code = "TOOMANYREQUESTS" if status == 429 else "UNAVAILABLE"
            body = json.dumps({"errors": [{"code": code,
                                           "message": "injected by faultproxy"}]}).encode()
            self.send_response(status)
            if "retry_after" in rule:
                self.send_header("Retry-After", str(rule["retry_after"]))
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            self.log_line(status, rule)
            return
        if action == "delay":
            time.sleep(float(rule.get("seconds", 1)))
        has_body = self.command in ("PUT", "PATCH", "POST")
        if action == "reset" and has_body:
            want = int(rule.get("after_bytes", 0))
            n = int(self.headers.get("Content-Length", "0") or "0")
            self.rfile.read(min(want, n))
            self.log_line("reset", rule)
            self.reset()
            return
        body = self.read_body() if has_body else None
        up = http.client.HTTPConnection(self.server.upstream_host, self.server.upstream_port,
                                        timeout=120)
        try:
            up.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for k, v in self.headers.items():
                if k.lower() in HOP or k.lower() == "content-length":
                    continue
                up.putheader(k, v)
            if body is not None:
                up.putheader("Content-Length", str(len(body)))
            up.endheaders()
            if body:
                up.send(body)
            resp = up.getresponse()
        except OSError as e:
            self.send_error(502, "upstream: %s" % e)
            self.log_line(502, rule)
            return
        self.send_response_only(resp.status, resp.reason)
        length = resp.getheader("Content-Length")
        for k, v in resp.getheaders():
            if k.lower() in HOP or k.lower() == "content-length":
                continue
            self.send_header(k, v)
        if self.command == "HEAD" or resp.status in (204, 304):
            if length is not None:
                self.send_header("Content-Length", length)
            self.end_headers()
            up.close()
            self.log_line(resp.status, rule)
            return
        if length is None:
            data = resp.read()
            length = str(len(data))
            chunks = [data]
        else:
            chunks = None
        self.send_header("Content-Length", length)
        self.end_headers()
        sent = 0
        limit = int(rule.get("after_bytes", 0)) if action == "reset" else None
        flip = int(rule.get("offset", 0)) if action == "corrupt" else None
        total = int(length)

        def pieces():
            if chunks is not None:
                yield from chunks
                return
            while True:
                piece = resp.read(65536)
                if not piece:
                    return
                yield piece

        for piece in pieces():
            if flip is not None and sent <= min(flip, total - 1) < sent + len(piece):
                i = min(flip, total - 1) - sent
                piece = piece[:i] + bytes([piece[i] ^ 0xFF]) + piece[i + 1:]
            if limit is not None and sent + len(piece) >= limit:
                self.wfile.write(piece[:max(0, limit - sent)])
                up.close()
                self.log_line("reset", rule)
                self.reset()
                return
            self.wfile.write(piece)
            sent += len(piece)
        up.close()
        self.log_line(resp.status, rule)

    do_GET = do_HEAD = do_PUT = do_PATCH = do_POST = do_DELETE = handle_any


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", type=int, required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--rules", required=True)
    ap.add_argument("--log", required=True)
    a = ap.parse_args()
    host, port = a.upstream.rsplit(":", 1)
    srv = ThreadingHTTPServer(("127.0.0.1", a.listen), Handler)
    srv.daemon_threads = True
    srv.upstream_host = host
    srv.upstream_port = int(port)
    srv.rules = Rules(a.rules)
    srv.log_path = a.log
    srv.log_lock = threading.Lock()
    open(a.log, "a").close()
    sys.stdout.write("listening on %d\n" % a.listen)
    sys.stdout.flush()
    srv.serve_forever()


if __name__ == "__main__":
    main()
