#!/usr/bin/env python3
"""Serve wasm-shell/dist/ on localhost with the cross-origin isolation headers (COOP/COEP).

    python3 wasm-shell/serve.py [--port 8080] [--models DIR]

--models DIR serves DIR under /models/ (e.g. ~/.cache/wasm-chord/models, so the page can load
http://127.0.0.1:8080/models/SmolLM2-135M-Instruct.Q4_1.gguf). Models are sent with
`Cache-Control: no-store`, so only the page's own cache (OPFS / Cache API) can avoid a second
download. GET /__requests returns how many requests each path received (for tests).
"""

import argparse
import json
import os
import sys
import threading
from collections import Counter
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

HERE = os.path.dirname(os.path.abspath(__file__))
COUNTS = Counter()
LOCK = threading.Lock()


class Handler(SimpleHTTPRequestHandler):
    extensions_map = {
        **SimpleHTTPRequestHandler.extensions_map,
        ".wasm": "application/wasm",
        ".js": "text/javascript",
        ".mjs": "text/javascript",
        ".json": "application/json",
        ".gguf": "application/octet-stream",
    }

    def __init__(self, *args, dist, models, quiet, **kw):
        self.dist = dist
        self.models = models
        self.quiet = quiet
        super().__init__(*args, directory=dist, **kw)

    def translate_path(self, path):
        p = unquote(urlsplit(path).path)
        if self.models and p.startswith("/models/"):
            rel = os.path.normpath(p[len("/models/"):]).lstrip("/")
            if rel.startswith(".."):
                return os.path.join(self.models, "\0invalid")
            return os.path.join(self.models, rel)
        return super().translate_path(path)

    def end_headers(self):
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        if urlsplit(self.path).path.startswith("/models/"):
            self.send_header("Cache-Control", "no-store")
            self.send_header("Access-Control-Allow-Origin", "*")
        else:
            self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def count(self):
        with LOCK:
            COUNTS[f"{self.command} {urlsplit(self.path).path}"] += 1

    def do_GET(self):
        if urlsplit(self.path).path == "/__requests":
            with LOCK:
                body = json.dumps(dict(COUNTS)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.count()
        super().do_GET()

    def do_HEAD(self):
        self.count()
        super().do_HEAD()

    def copyfile(self, source, outputfile):
        try:
            super().copyfile(source, outputfile)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the page went away mid-download

    def log_message(self, fmt, *args):
        if not self.quiet:
            sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--dist", default=os.path.join(HERE, "dist"))
    ap.add_argument("--models", default=None, help="folder served under /models/")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args()
    if not os.path.isfile(os.path.join(a.dist, "index.html")):
        sys.exit(f"{a.dist} has no index.html: run wasm-shell/build.sh first")
    models = os.path.abspath(os.path.expanduser(a.models)) if a.models else None
    handler = partial(Handler, dist=os.path.abspath(a.dist), models=models, quiet=a.quiet)
    srv = ThreadingHTTPServer((a.host, a.port), handler)
    srv.daemon_threads = True
    port = srv.server_address[1]
    print(f"serving {a.dist} on http://{a.host}:{port}/" + (f" (models: {models} at /models/)" if models else ""), flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
