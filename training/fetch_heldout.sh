#!/bin/sh
# Rebuild the held-out evaluation files (training/heldout/*) from Debian bookworm packages.
#
#   sh training/fetch_heldout.sh                        # -> training/heldout/
#   HELDOUT_DIR=/tmp/h sh training/fetch_heldout.sh     # -> any other folder
#
# The packages are only downloaded (apt-get download) and unpacked (dpkg-deb -x) under
# HELDOUT_DEBS (default .cache/heldout-debs); nothing is installed.  None of them is in the
# training corpus (training/packages.txt), and no file comes from a compression benchmark.
# Each file is a fixed byte slice of one file of one package, except http-exchange.txt: real
# HTTP/1.1 exchanges (a Python http.server handler on 127.0.0.1 and a raw-socket client, bytes
# as on the wire) that serve files of the same packages, with fixed Date/Server headers so the
# bytes do not depend on the machine or the time.  Versions are pinned; if the archive no
# longer has a pinned version, the current one is used and the sha256 check at the end says
# whether the bytes changed.  Needs apt-get, dpkg-deb, python3 (stdlib only).
# Writes the 8 files and SOURCES.txt (package, version, path, byte range, sha256).
# Exit status 0 = all 8 files have the expected sha256; 2 = written, but some differ.
set -eu
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${HELDOUT_DIR:-$REPO/training/heldout}
DEBS=${HELDOUT_DEBS:-$REPO/.cache/heldout-debs}
PY=${PYTHON:-python3}

command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || {
  echo "fetch_heldout.sh: needs apt-get and dpkg-deb (Debian/Ubuntu)" >&2; exit 1; }

# package=pinned version (Debian bookworm)
PKGS="base-files=12.4+deb12u14 libc6-dev=2.36-9+deb12u14 libpython3.11-stdlib=3.11.2-6+deb12u7
rust-doc=1.63.0+dfsg1-2 python3-nbformat=5.5.0-1 fail2ban=1.0.2-2 coreutils=9.1-1"

mkdir -p "$OUT" "$DEBS"
. "$REPO/scripts/fetch-deb.sh"
VERSIONS=""
for spec in $PKGS; do
  pkg=${spec%%=*}
  deb=$(fetch_deb "$DEBS" "$pkg" "${spec#*=}")
  VERSIONS="$VERSIONS $pkg=$(dpkg-deb -f "$deb" Version)"
done

exec "$PY" - "$DEBS" "$OUT" $VERSIONS <<'EOF'
import hashlib, json, os, socket, sys, threading
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

debs, out = sys.argv[1], sys.argv[2]
ver = dict(a.split("=", 1) for a in sys.argv[3:])
N = 12288
# name, package, path in the package, how the slice is cut
SPECS = [
    ("prose-mpl2.txt", "base-files", "/usr/share/common-licenses/MPL-2.0", "first"),
    ("code-stdio.h", "libc6-dev", "/usr/include/stdio.h", "first"),
    ("code-json-decoder.py", "libpython3.11-stdlib", "/usr/lib/python3.11/json/decoder.py", "first"),
    ("page-rustdoc.html", "rust-doc", "/usr/share/doc/rust-doc/html/rustdoc/advanced-features.html", "first"),
    ("data-schema.json", "python3-nbformat", "/usr/lib/python3/dist-packages/nbformat/v4/nbformat.v4.5.schema.json", "first"),
    ("log-sshd.log", "fail2ban", "/usr/lib/python3/dist-packages/fail2ban/tests/files/logs/sshd", "loglines"),
    ("http-exchange.txt", "base-files, python3-nbformat, fail2ban", "-", "http"),
    ("bin-ls.bin", "coreutils", "/bin/ls", "offset8192"),
]
EXPECTED = {  # sha256 of each file as built from the pinned versions
    "prose-mpl2.txt": "b69bf2f6dbbaa4908e99e57587f8eba2f7af08ad13b1d73114e43dafc414e08b",
    "code-stdio.h": "4ff0afe3c50a2d2cc0c26f6ddb230187c43a5e0d254dc00f22ecef3fd3ca5f9a",
    "code-json-decoder.py": "f8db18237c51138b53032da08d0e73afd566ef35a46f92fad22f458b8694c5a5",
    "page-rustdoc.html": "9ca69f470f10344bcbbc9c88dc249393e000608ecfb8a55c27abd23f6add86bc",
    "data-schema.json": "945fbdb68c3bdbff6a81229e9b618e8f83d936505edc9115d131c5eab7c58d9e",
    "log-sshd.log": "43d6cb3c5e598d59c26a3c3854c640dd82ab7d2ee783c9c1512f70c8c1cf069c",
    "http-exchange.txt": "fd40f53b56d59c43f51b4eca85807225adf053686bfe54f2cdb87f71fa610c70",
    "bin-ls.bin": "2d9727f2d8b4f83793e98496298ac794c1593c82bfbc5f1ca4a92bc092212e64",
}
DATE = "Sat, 11 Jul 2026 10:16:37 GMT"


def read(pkg, path):
    return open(os.path.join(debs, pkg) + path, "rb").read()


def loglines(b):
    # the test log annotates every sample line with a "# failJSON: ..." comment; keep only the log lines
    return b"".join(l for l in b.splitlines(True) if l.strip() and not l.startswith(b"#"))


def http_exchange():
    roots = {"/licenses/": ("base-files", "/usr/share/common-licenses/"),
             "/os-release": ("base-files", "/usr/lib/os-release"),
             "/nbformat/": ("python3-nbformat", "/usr/lib/python3/dist-packages/nbformat/"),
             "/fail2ban/filter.d/": ("fail2ban", "/etc/fail2ban/filter.d/")}

    def resolve(url):
        for pre, (pkg, base) in roots.items():
            if url.startswith(pre):
                return os.path.join(debs, pkg) + base + url[len(pre):]
        return None

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def version_string(self):
            return "nginx/1.22.1"

        def date_time_string(self, timestamp=None):
            return DATE

        def log_message(self, *a):
            pass

        def reply(self, code, body, ctype, extra=(), head=False):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in extra:
                self.send_header(k, v)
            self.send_header("Connection", "close")
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def do_GET(self, head=False):
            p = resolve(self.path.split("?")[0])
            if p is None or not os.path.exists(p):
                body = (f"<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n<center><h1>404 Not Found"
                        f"</h1></center>\r\n<hr><center>nginx/1.22.1</center>\r\n</body>\r\n</html>\r\n").encode()
                return self.reply(404, body, "text/html", head=head)
            if os.path.isdir(p):  # JSON listing, like an autoindex API
                ents = [{"name": n + ("/" if os.path.isdir(os.path.join(p, n)) else ""),
                         "size": os.path.getsize(os.path.join(p, n)),
                         "mtime": formatdate(int(os.path.getmtime(os.path.join(p, n))), usegmt=True)}
                        for n in sorted(os.listdir(p))]
                return self.reply(200, json.dumps(ents, indent=1).encode() + b"\n", "application/json", head=head)
            mtime = formatdate(int(os.path.getmtime(p)), usegmt=True)
            etag = '"%x-%x"' % (int(os.path.getmtime(p)), os.path.getsize(p))
            meta = [("Last-Modified", mtime), ("ETag", etag), ("Accept-Ranges", "bytes")]
            if self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                for k, v in meta:
                    self.send_header(k, v)
                self.send_header("Connection", "close")
                return self.end_headers()
            body = open(p, "rb").read()
            ctype = ("application/json" if p.endswith(".json") else "text/x-python" if p.endswith(".py")
                     else "text/plain; charset=utf-8")
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes="):
                a, b = rng[6:].split("-")
                a, b = int(a), min(int(b), len(body) - 1)
                meta.append(("Content-Range", f"bytes {a}-{b}/{len(body)}"))
                return self.reply(206, body[a:b + 1], ctype, meta, head)
            self.reply(200, body, ctype, meta, head)

        def do_HEAD(self):
            self.do_GET(head=True)

        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            req = json.loads(self.rfile.read(n))
            body = json.dumps({"status": "ok", "received": req, "id": 4711,
                               "links": {"self": "/api/v1/jobs/4711"}}, indent=2).encode() + b"\n"
            self.reply(201, body, "application/json", [("Location", "/api/v1/jobs/4711")])

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    ua = "User-Agent: curl/7.88.1\r\n"
    acc = "Accept: */*\r\n"
    etag_f = os.path.join(debs, "base-files") + "/usr/share/common-licenses/GPL-3"
    etag = '"%x-%x"' % (int(os.path.getmtime(etag_f)), os.path.getsize(etag_f))
    post = json.dumps({"job": "rebuild-index", "suite": "bookworm", "arch": ["amd64", "arm64"], "priority": 5}).encode()
    reqs = [
        f"GET /os-release HTTP/1.1\r\nHost: deb.example.org\r\n{ua}{acc}\r\n".encode(),
        f"GET /nbformat/v4/ HTTP/1.1\r\nHost: deb.example.org\r\n{ua}Accept: application/json\r\n\r\n".encode(),
        f"HEAD /licenses/GPL-3 HTTP/1.1\r\nHost: deb.example.org\r\n{ua}{acc}\r\n".encode(),
        f"GET /licenses/GPL-3 HTTP/1.1\r\nHost: deb.example.org\r\n{ua}{acc}If-None-Match: {etag}\r\n\r\n".encode(),
        f"GET /licenses/GPL-4 HTTP/1.1\r\nHost: deb.example.org\r\n{ua}{acc}\r\n".encode(),
        (f"POST /api/v1/jobs HTTP/1.1\r\nHost: api.example.org\r\n{ua}{acc}Content-Type: application/json\r\n"
         f"Content-Length: {len(post)}\r\n\r\n").encode() + post,
        f"GET /fail2ban/filter.d/sshd.conf HTTP/1.1\r\nHost: deb.example.org\r\n{ua}{acc}Range: bytes=0-2047\r\n\r\n".encode(),
        f"GET /nbformat/v3/nbformat.v3.schema.json HTTP/1.1\r\nHost: deb.example.org\r\n{ua}{acc}\r\n".encode(),
    ]
    parts = []
    for r in reqs:
        with socket.create_connection(srv.server_address) as s:
            s.sendall(r)
            resp = b""
            while True:
                c = s.recv(65536)
                if not c:
                    break
                resp += c
        parts += [r, resp]
    srv.shutdown()
    return b"".join(parts)


lines = ["Held-out evaluation files: 12 KiB (12288 bytes) each, rebuilt by training/fetch_heldout.sh from",
         "Debian bookworm packages (apt-get download + dpkg-deb -x); none of these packages is in the",
         "training corpus (training/packages.txt) and none of the files is from a compression benchmark.",
         "# file\tpackage version\tsource\tsha256"]
bad = 0
for name, pkg, path, cut in SPECS:
    if cut == "first":
        data, src = read(pkg, path)[:N], f"{path}, first 12 KiB"
    elif cut == "loglines":
        data, src = loglines(read(pkg, path))[:N], f"{path}, first 12 KiB of its log lines (comment and empty lines dropped)"
    elif cut == "offset8192":
        data, src = read(pkg, path)[8192:8192 + N], f"{path}, bytes 8192..20480 (x86-64 ELF)"
    else:
        data = http_exchange()[:N]
        src = ("first 12 KiB of 8 HTTP/1.1 exchanges as on the wire (CRLF): GET, JSON listing, HEAD, 304, 404, POST "
               "JSON, 206 range, GET JSON; a stdlib http.server handler on 127.0.0.1 serving files of these packages, "
               f"fixed Date ({DATE}) and Server headers")
    assert len(data) == N, (name, len(data))
    with open(os.path.join(out, name + ".part"), "wb") as f:
        f.write(data)
    os.replace(os.path.join(out, name + ".part"), os.path.join(out, name))
    h = hashlib.sha256(data).hexdigest()
    vers = ", ".join(f"{p} {ver[p]}" for p in pkg.split(", "))
    exp = EXPECTED.get(name)
    flag = "" if exp in (None, h) else "   <-- differs from the expected sha256"
    bad += bool(flag)
    lines.append(f"{name}\t{vers}\t{src}\t{h}{flag}")
    print(f"    {name:22s} {h[:16]}  {vers}{flag}")
with open(os.path.join(out, "SOURCES.txt"), "w") as f:
    f.write("\n".join(lines) + "\n")
sys.exit(2 if bad else 0)
EOF
