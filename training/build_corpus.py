#!/usr/bin/env python3
"""Build the training corpus from Debian packages (apt-get download + dpkg-deb -x, never
installed), the Rust crates of this workspace's Cargo.lock (crates.io sources in CARGO_HOME),
real HTTP/1.1 exchanges and logs made by running nginx on this machine (traffic.py), and
synthetic traffic-like text (HTTP exchanges, logs, JSON).

Writes training/data/corpus.txt (documents joined by <|endoftext|>) and
training/packages.txt (package name + version of every .deb and crate used).
Excluded on purpose: public compression benchmarks, the packages the evaluation samples in
.cache/samples/ come from (debian-faq, libpython3.11-stdlib, debian-reference-en, iso-codes)
and the packages of the held-out set (training/heldout/SOURCES.txt).
"""
import gzip, io, os, random, subprocess, sys, tempfile, json
import re
import traffic

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
PACKAGES = [
    # prose / docs
    "debian-policy", "developers-reference", "maint-guide", "debian-handbook", "bash-doc",
    "python3.11-doc", "apache2-doc", "manpages", "manpages-dev", "git-man", "git-doc",
    # code
    "python3-pygments", "python3-docutils", "python3-jinja2", "python3-setuptools",
    "python3-pip", "libpython3.11-testsuite", "libjs-jquery",
    "libjs-bootstrap4", "python3-jsonschema", "python3-requests", "python3-urllib3",
    # C / C++ headers
    "linux-libc-dev", "libssl-dev", "libglib2.0-dev", "libsqlite3-dev", "zlib1g-dev",
    "libcurl4-openssl-dev", "libx11-dev", "libgtk-3-dev", "libpng-dev", "libxml2-dev",
    "libsystemd-dev", "libpq-dev", "libboost1.74-dev", "libevent-dev", "libuv1-dev",
    # HTML documentation
    "sqlite3-doc", "postgresql-doc-15", "libgtk-3-doc", "libglib2.0-doc", "nodejs-doc", "nginx-doc",
    # more code (Perl, Python, JS / TypeScript, package.json)
    "perl-modules-5.36", "python3-django", "python3-numpy", "python3-babel", "node-typescript",
    "node-lodash", "node-axios", "node-express", "libjs-jquery-ui", "libjs-d3",
]
# evaluation samples (.cache/samples) and held-out set (training/heldout/SOURCES.txt)
EXCLUDED = {"debian-faq", "libpython3.11-stdlib", "debian-reference-en", "iso-codes",
            "base-files", "libc6-dev", "rust-doc", "python3-nbformat", "fail2ban", "coreutils"}
PER_PACKAGE = 3_500_000      # bytes of text kept per package
MAX_FILE = 400_000
SYNTH = 4_000_000
CRATES = 12_000_000          # bytes of crate sources (Cargo.lock's crates.io packages)
PER_CRATE = 250_000
TRAFFIC = 8_000_000          # bytes of real nginx exchanges + logs
EOT = "<|endoftext|>"


def is_text(b):
    if b"\x00" in b[:8192]:
        return False
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def package_docs(deb, rng):
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(["dpkg-deb", "-x", deb, d], check=True)
        files = []
        for root, _, names in os.walk(d):
            for n in names:
                p = os.path.join(root, n)
                if os.path.islink(p) or not os.path.isfile(p):
                    continue
                files.append(p)
        files.sort()
        rng.shuffle(files)
        out, total = [], 0
        for p in files:
            if os.path.basename(p) == "tarfile.py":
                continue
            try:
                b = open(p, "rb").read(MAX_FILE * 4)
                rel = os.path.relpath(p, d)
                if p.endswith(".gz"):
                    b = gzip.decompress(b)
            except Exception:
                continue
            b = b[:MAX_FILE]
            if len(b) < 200 or not is_text(b):
                continue
            out.append((rel[:-3] if p.endswith(".gz") else rel, b.decode("utf-8")))
            total += len(b)
            if total >= PER_PACKAGE:
                break
        return out


def synth_traffic(rng, budget):
    """HTTP request/response exchanges, access/syslog logs and JSON API bodies."""
    paths = ["/", "/index.html", "/api/v1/users", "/api/v1/orders", "/static/app.js", "/login",
             "/search?q=", "/images/logo.png", "/api/v2/items/", "/health", "/metrics"]
    agents = ["Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
              "curl/7.88.1", "python-requests/2.28.1",
              "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"]
    hosts = ["example.com", "api.example.org", "shop.example.net", "intranet.local"]
    words = "alpha beta gamma delta error warning timeout connected session user order item cache".split()
    docs, total = [], 0
    while total < budget:
        kind = rng.randrange(4)
        lines = []
        if kind == 0:  # access log
            for _ in range(rng.randrange(20, 200)):
                ip = ".".join(str(rng.randrange(1, 255)) for _ in range(4))
                lines.append(f'{ip} - - [{rng.randrange(1,29):02d}/Mar/2024:{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d} +0000] '
                             f'"{rng.choice(["GET","POST","PUT","DELETE"])} {rng.choice(paths)}{rng.randrange(1000) if rng.random()<.3 else ""} HTTP/1.1" '
                             f'{rng.choice([200,200,200,304,404,500,301])} {rng.randrange(100,50000)} "-" "{rng.choice(agents)}"')
        elif kind == 1:  # syslog
            for _ in range(rng.randrange(20, 200)):
                svc = rng.choice(["sshd", "systemd", "kernel", "cron", "nginx", "postfix/smtpd"])
                lines.append(f"Mar {rng.randrange(1,29):2d} {rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d} "
                             f"host{rng.randrange(10)} {svc}[{rng.randrange(100,65000)}]: "
                             + " ".join(rng.choice(words) for _ in range(rng.randrange(3, 12))))
        elif kind == 2:  # HTTP exchange with JSON body
            for _ in range(rng.randrange(1, 6)):
                body = json.dumps({"id": rng.randrange(10**6), "name": rng.choice(words),
                                   "tags": [rng.choice(words) for _ in range(rng.randrange(4))],
                                   "price": round(rng.random() * 100, 2), "active": rng.random() < .5},
                                  indent=rng.choice([None, 2]))
                h = rng.choice(hosts)
                lines += [f"GET {rng.choice(paths)} HTTP/1.1", f"Host: {h}", f"User-Agent: {rng.choice(agents)}",
                          "Accept: application/json", "Accept-Encoding: gzip, deflate, br", "Connection: keep-alive", "",
                          "HTTP/1.1 200 OK", "Content-Type: application/json; charset=utf-8",
                          f"Content-Length: {len(body)}", f"Date: Mon, {rng.randrange(1,29):02d} Mar 2024 12:{rng.randrange(60):02d}:00 GMT",
                          "Server: nginx/1.22.1", "Cache-Control: no-cache", "", body, ""]
        else:  # JSON array
            arr = [{"user": rng.choice(words) + str(rng.randrange(100)), "ts": 1700000000 + rng.randrange(10**7),
                    "event": rng.choice(words), "value": rng.randrange(-1000, 1000)} for _ in range(rng.randrange(5, 60))]
            lines.append(json.dumps(arr, indent=rng.choice([None, 2, 4])))
        d = "\n".join(lines) + "\n"
        docs.append(d)
        total += len(d)
    return docs


def crate_sources(rng):
    """Text files of the crates.io packages in Cargo.lock, read from CARGO_HOME's source cache
    (present after any `cargo build` of the workspace)."""
    root = os.path.dirname(HERE)
    lock = open(os.path.join(root, "Cargo.lock")).read()
    crates = re.findall(r'name = "([^"]+)"\nversion = "([^"]+)"\nsource = "registry', lock)
    home = os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo"))
    srcs = [os.path.join(home, "registry", "src", d) for d in sorted(os.listdir(os.path.join(home, "registry", "src")))]
    rng.shuffle(crates)
    docs, used, total = [], [], 0
    for name, ver in crates:
        d = next((os.path.join(s_, f"{name}-{ver}") for s_ in srcs if os.path.isdir(os.path.join(s_, f"{name}-{ver}"))), None)
        if d is None:
            continue
        files = sorted(os.path.join(r, n) for r, _, ns in os.walk(d) for n in ns
                       if n.endswith((".rs", ".toml", ".md", ".c", ".h", ".json", ".py", ".txt")))
        got = 0
        for p in files:
            b = open(p, "rb").read(MAX_FILE)
            if len(b) < 200 or not is_text(b) or os.path.basename(p) == "Cargo.toml.orig":
                continue
            docs.append(b.decode("utf-8")); got += len(b)
            if got >= PER_CRATE:
                break
        used.append(f"crate {name}\t{ver}\t-\t{got} bytes")
        total += got
        if total >= CRATES:
            break
    return docs, sorted(used)


def main():
    os.makedirs(DATA, exist_ok=True)
    rng = random.Random(1234)
    debdir = os.path.join(DATA, "debs")
    os.makedirs(debdir, exist_ok=True)
    assert not EXCLUDED & set(PACKAGES)
    have = {f.split("_")[0] for f in os.listdir(debdir) if f.endswith(".deb")}
    for pkg in PACKAGES:  # one at a time: a package the mirror lacks is skipped, not fatal
        if pkg not in have and subprocess.run(["apt-get", "download", pkg], cwd=debdir).returncode != 0:
            print(f"skipped {pkg}: apt-get download failed", flush=True)
    docs, manifest, served = [], [], []
    for f in sorted(os.listdir(debdir)):
        if not f.endswith(".deb"):
            continue
        p = os.path.join(debdir, f)
        name = subprocess.run(["dpkg-deb", "-f", p, "Package"], capture_output=True, text=True).stdout.strip()
        ver = subprocess.run(["dpkg-deb", "-f", p, "Version"], capture_output=True, text=True).stdout.strip()
        if name in EXCLUDED:
            continue
        d = package_docs(p, rng)
        n = sum(len(x) for _, x in d)
        manifest.append(f"{name}\t{ver}\t{len(d)} files\t{n} bytes")
        print(manifest[-1], flush=True)
        docs += [x for _, x in d]
        served += [(f"{name}/{rel}", x) for rel, x in d if len(x) <= traffic.MAX_SERVED]
    c, used = crate_sources(rng)
    manifest += used
    manifest.append(f"(crates.io sources above, from Cargo.lock)\t-\t{len(c)} files\t{sum(map(len, c))} bytes")
    print(manifest[-1], flush=True)
    docs += c
    t = traffic.nginx_traffic(served, random.Random(99), TRAFFIC)
    manifest.append(f"(nginx {traffic.nginx_version()}: HTTP/1.1 exchanges + access/error logs, traffic.py)\t-\t{len(t)} docs\t{sum(map(len, t))} bytes")
    print(manifest[-1], flush=True)
    docs += t
    s = synth_traffic(rng, SYNTH)
    manifest.append(f"(synthetic traffic: HTTP exchanges, access logs, syslog, JSON)\t-\t{len(s)} docs\t{sum(map(len, s))} bytes")
    docs += s
    rng.shuffle(docs)
    with open(os.path.join(DATA, "corpus.txt"), "w") as fh:
        fh.write(EOT.join(docs))
    with open(os.path.join(HERE, "packages.txt"), "w") as fh:
        fh.write("# package\tversion\tfiles\ttext bytes (Debian bookworm, apt-get download)\n" + "\n".join(manifest) + "\n")
    print("corpus bytes", os.path.getsize(os.path.join(DATA, "corpus.txt")))


if __name__ == "__main__":
    main()
