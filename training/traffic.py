#!/usr/bin/env python3
"""Real HTTP/1.1 traffic for the training corpus: runs this machine's nginx (a child process
with a generated config, 127.0.0.1 only) over a docroot of package files, talks to it with a
raw-socket client (GET, HEAD, conditional, range, 404, 405, autoindex HTML and JSON listings,
keep-alive), and returns the exchanges exactly as on the wire plus nginx's access logs
(combined and JSON formats) and error log.

Used by build_corpus.py; `python3 training/traffic.py` alone prints a sample exchange.
"""
import os, shutil, socket, subprocess, tempfile, time

MAX_SERVED = 48_000  # largest file put in the docroot
MTIME = 1_700_000_000  # fixed Last-Modified for every served file

CLIENTS = [
    ["User-Agent: curl/7.88.1", "Accept: */*"],
    ["User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
     "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
     "Accept-Language: en-US,en;q=0.5", "Accept-Encoding: identity", "Connection: keep-alive",
     "Upgrade-Insecure-Requests: 1"],
    ["User-Agent: python-requests/2.28.1", "Accept-Encoding: identity", "Accept: */*",
     "Connection: keep-alive"],
    ["User-Agent: Wget/1.21.3", "Accept: */*", "Accept-Encoding: identity", "Connection: Keep-Alive"],
    ["User-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/126.0.0.0 Safari/537.36", "Accept: application/json, text/plain, */*",
     "Accept-Language: de-DE,de;q=0.9,en;q=0.8", "Sec-Fetch-Mode: cors", "Connection: keep-alive"],
    ["User-Agent: Go-http-client/1.1", "Accept-Encoding: identity"],
]


def nginx_version():
    p = subprocess.run([shutil.which("nginx") or "/usr/sbin/nginx", "-v"], capture_output=True, text=True)
    return (p.stderr or p.stdout).strip().split("/")[-1]


def _config(root, docroot, port):
    mime = "/etc/nginx/mime.types"
    return f"""daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log info;
events {{ worker_connections 64; }}
http {{
    {"include " + mime + ";" if os.path.exists(mime) else ""}
    default_type application/octet-stream;
    log_format json escape=json '{{"time":"$time_iso8601","remote":"$remote_addr","method":"$request_method",'
        '"uri":"$request_uri","status":$status,"bytes":$body_bytes_sent,"referer":"$http_referer",'
        '"agent":"$http_user_agent","request_time":$request_time}}';
    access_log {root}/access.log combined;
    access_log {root}/access.json json;
    client_body_temp_path {root}/tmp; proxy_temp_path {root}/tmp; fastcgi_temp_path {root}/tmp;
    uwsgi_temp_path {root}/tmp; scgi_temp_path {root}/tmp;
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        root {docroot};
        location /list/ {{ alias {docroot}/; autoindex on; }}
        location /api/ {{ alias {docroot}/; autoindex on; autoindex_format json; }}
    }}
}}
"""


def _read_response(sock, buf, head_only):
    """One response from sock (buf: bytes already read). Returns (raw response, rest)."""
    while b"\r\n\r\n" not in buf:
        d = sock.recv(65536)
        if not d:
            return buf, b""
        buf += d
    hdr, _, body = buf.partition(b"\r\n\r\n")
    lines = hdr.split(b"\r\n")
    status = int(lines[0].split()[1])
    fields = {l.split(b":", 1)[0].strip().lower(): l.split(b":", 1)[1].strip() for l in lines[1:] if b":" in l}
    if head_only or status in (204, 304) or 100 <= status < 200:
        return hdr + b"\r\n\r\n", body
    if b"content-length" in fields:
        n = int(fields[b"content-length"])
        while len(body) < n:
            d = sock.recv(65536)
            if not d:
                break
            body += d
        return hdr + b"\r\n\r\n" + body[:n], body[n:]
    if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
        while not body.endswith(b"0\r\n\r\n"):
            d = sock.recv(65536)
            if not d:
                break
            body += d
        return hdr + b"\r\n\r\n" + body, b""
    while True:  # close-delimited
        d = sock.recv(65536)
        if not d:
            return hdr + b"\r\n\r\n" + body, b""
        body += d


def _request(rng, files, dirs, last):
    """(request bytes, head_only) of a randomly chosen kind."""
    path, kind = "/" + rng.choice(files), rng.random()
    extra = []
    method = "GET"
    if kind < 0.08:
        method = "HEAD"
    elif kind < 0.16 and last:
        extra = [f"If-Modified-Since: {last[0]}"] if last[0] else []
        extra += [f"If-None-Match: {last[1]}"] if last[1] and rng.random() < .5 else []
        path = last[2]
    elif kind < 0.22:
        a = rng.randrange(0, 4096)
        extra = [f"Range: bytes={a}-{a + rng.choice([255, 1023, 4095])}"]
    elif kind < 0.30:
        path = path.rsplit("/", 1)[0] + "/" + rng.choice(["missing.html", "old/index.php", "favicon.ico", "wp-login.php"])
    elif kind < 0.34:
        method = "POST"
        body = '{"q":"%s","page":%d}' % (rng.choice(["status", "search", "login"]), rng.randrange(10))
        extra = ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    elif kind < 0.42:
        path = rng.choice(["/list/", "/api/"]) + rng.choice(dirs)
    elif kind < 0.46:
        path += "?v=%d&lang=%s" % (rng.randrange(1000), rng.choice(["en", "de", "fr"]))
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost" + rng.choice(["", ":8080"])] + rng.choice(CLIENTS) + extra
    req = ("\r\n".join(lines) + "\r\n\r\n").encode()
    if method == "POST":
        req += body.encode()
    return req, method == "HEAD", path


def nginx_traffic(served, rng, budget):
    """Documents of real traffic: exchanges (one connection each) and nginx's logs, about `budget` bytes."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx) or not served:
        print("traffic: no nginx, skipped", flush=True)
        return []
    with tempfile.TemporaryDirectory() as root:
        os.chmod(root, 0o755)  # nginx's workers run as an unprivileged user when started by root
        docroot = os.path.join(root, "www")
        files, dirs = [], set()
        for rel, text in served:
            rel = rel.replace("..", "_")
            p = os.path.join(docroot, rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "w") as fh:
                fh.write(text)
            os.utime(p, (MTIME, MTIME))
            files.append(rel)
            dirs.add(os.path.dirname(rel) + "/")
        files.sort(); dirs = sorted(dirs)
        os.makedirs(os.path.join(root, "tmp"))
        s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
        open(os.path.join(root, "nginx.conf"), "w").write(_config(root, docroot, port))
        proc = subprocess.Popen([nginx, "-p", root, "-c", os.path.join(root, "nginx.conf")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        docs, total = [], 0
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close(); break
                except OSError:
                    time.sleep(0.05)
            log_budget = budget // 5
            while total < budget - log_budget:
                conn = socket.create_connection(("127.0.0.1", port), timeout=5)
                out, rest, last = b"", b"", None
                for _ in range(rng.choice([1, 1, 2, 3, 5])):
                    req, head, path = _request(rng, files, dirs, last)
                    conn.sendall(req)
                    resp, rest = _read_response(conn, rest, head)
                    out += req + resp
                    h = resp.split(b"\r\n\r\n", 1)[0].decode("latin-1")
                    f = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in h.split("\r\n")[1:] if ":" in l}
                    last = (f.get("last-modified"), f.get("etag"), path) if " 200 " in h.split("\r\n")[0] else last
                    if f.get("connection", "").lower() == "close":
                        break
                conn.close()
                text = out.decode("utf-8", errors="replace")
                docs.append(text); total += len(text)
        finally:
            proc.terminate(); proc.wait()
        for name in ("access.log", "access.json", "error.log"):
            b = open(os.path.join(root, name), "rb").read()
            lines = b.decode("utf-8", errors="replace").splitlines(keepends=True)
            # documents of 20-200 consecutive lines, up to a share of the log budget each
            i, got = 0, 0
            while i < len(lines) and got < log_budget // 3:
                n = rng.randrange(20, 200)
                d = "".join(lines[i:i + n]); docs.append(d); got += len(d); total += len(d); i += n
    return docs


if __name__ == "__main__":
    import random
    here = os.path.dirname(os.path.abspath(__file__))
    demo = [("doc/README.txt", "hello traffic\n" * 40), ("doc/a.json", '{"a": 1}\n' * 30)]
    for d in nginx_traffic(demo, random.Random(1), 20_000)[:3]:
        print(d[:1500]); print("-----")
