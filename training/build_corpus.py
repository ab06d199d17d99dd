#!/usr/bin/env python3
"""Build the training corpus from Debian packages (apt-get download + dpkg-deb -x, never
installed), the Rust crates of this workspace's Cargo.lock (crates.io sources in CARGO_HOME),
real HTTP/1.1 exchanges and logs made by running nginx on this machine (traffic.py), and
synthetic traffic-like text (HTTP exchanges, logs, JSON).

Broadened for issue 17 (EXTRA below): ordinary English prose (dictionaries, fortunes, the KJV
Bible, FAQs, mail), HTML from many generators (Sphinx, Doxygen, javadoc, texinfo, gtk-doc, qdoc,
mkdocs, ...), URL lists taken from all of the corpus's text, JSON / YAML / XML / CSV data,
configuration files of many daemons, more languages of source code, non-English manual pages, and
text made by running programs here (corpus_extra.py): redis-server's RESP wire exchanges and
logs, SMTP exchanges with MIME mail, git's trace logs.

Writes training/data/corpus.txt (documents joined by <|endoftext|>),
training/data/classes.tsv (bytes per class) and training/packages.txt (package name, version,
licence, class, files, bytes of every .deb, crate and generated source).
Excluded on purpose: public compression benchmarks, the packages the evaluation samples in
.cache/samples/ come from (debian-faq, libpython3.11-stdlib, debian-reference-en, iso-codes)
and the packages of the held-out set (training/heldout/SOURCES.txt).
"""
import gzip, io, os, random, subprocess, sys, tempfile, json
import re
import traffic
import corpus_extra

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
# issue 17: class -> packages (Debian bookworm main).  None of them is in the development set
# (training/devset/SOURCES.txt) or the held-out set; fetch_devset.sh checks that.
EXTRA = {
    "prose": ["dict-gcide", "wordnet-base", "fortunes", "miscfiles", "bible-kjv-text", "dict-jargon",
              "dict-foldoc", "dict-vera", "harden-doc", "libmail-box-perl"],
    "html": ["sphinx-doc", "python-django-doc", "libeigen3-doc", "doxygen-doc", "junit4-doc",
             "libcommons-lang3-java-doc", "gnutls-doc", "octave-doc", "libsoup2.4-doc", "mkdocs-doc",
             "qtbase5-doc-html", "erlang-doc", "gnuplot-doc", "libboost1.81-doc", "libxml2-doc"],
    "data": ["node-mdn-data", "unicode-data", "unicode-cldr-core", "osinfo-db", "hwdata", "publicsuffix",
             "tzdata", "ansible", "yamllint", "npm"],
    "config": ["nginx-common", "apache2", "postfix", "openssh-server", "samba-common", "systemd", "logrotate",
               "rsyslog", "bind9", "squid-common", "haproxy", "php8.2-common"],
    "code": ["golang-1.19-src", "libruby3.1", "php-symfony-console", "php-pear", "lua-penlight", "tcl8.6",
             "bash-completion", "emacs-el", "vim-runtime", "zsh-common"],
    "non-english": ["manpages-de", "manpages-fr", "manpages-es", "manpages-ja", "manpages-pl", "manpages-it",
                    "manpages-pt-br", "manpages-zh", "maint-guide-fr", "developers-reference-fr"],
}
EXTRA_CAP = {"dict-gcide": 6_000_000, "bible-kjv-text": 5_000_000, "golang-1.19-src": 5_000_000,
             "ansible": 5_000_000}  # bytes of text per package where not PER_PACKAGE
# packages whose text is mostly not the class's: keep only paths matching this
EXTRA_PATHS = {"libmail-box-perl": r"/t/|\.mbox|folders", "apache2": r"^etc/|/examples?/",
               "postfix": r"^etc/|/examples?/|main\.cf|master\.cf", "samba-common": r"^etc/|/examples?/",
               "systemd": r"\.(service|socket|target|timer|conf|network|link|path|mount)$|^etc/",
               "bind9": r"^etc/|/examples?/", "squid-common": r"^etc/|\.conf",
               "php8.2-common": r"php\.ini|^etc/|\.ini$"}
CLASS_OF = {"(old)": "mixed"}
for c_, ps in EXTRA.items():
    for p_ in ps:
        CLASS_OF[p_] = c_
# evaluation samples (.cache/samples) and held-out set (training/heldout/SOURCES.txt)
EXCLUDED = {"debian-faq", "libpython3.11-stdlib", "debian-reference-en", "iso-codes",
            "base-files", "libc6-dev", "rust-doc", "python3-nbformat", "fail2ban", "coreutils"}
DEVSET = os.path.join(HERE, "devset", "SOURCES.txt")  # development-set packages: never in the corpus
PER_PACKAGE = 3_500_000      # bytes of text kept per package
MAX_FILE = 400_000
SYNTH = 4_000_000
CRATES = 12_000_000          # bytes of crate sources (Cargo.lock's crates.io packages)
PER_CRATE = 250_000
TRAFFIC = 8_000_000          # bytes of real nginx exchanges + logs
URLS = 4_000_000             # bytes of URL lists
EOT = "<|endoftext|>"


def is_text(b):
    if b"\x00" in b[:8192]:
        return False
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError as e:
        return e.start >= len(b) - 3  # a character cut at the end of the slice


def licence(d, name):
    """The licence(s) named in usr/share/doc/NAME/copyright (DEP-5 `License:` fields, else keywords)."""
    doc = os.path.join(d, "usr", "share", "doc", name)
    p = os.path.join(doc, "copyright")
    if os.path.islink(doc):
        return "see " + os.path.basename(os.readlink(doc))
    if not os.path.isfile(p):
        return "unknown"
    t = open(p, "rb").read().decode("utf-8", "replace")
    found = []
    for m in re.finditer(r"^License:[ \t]*(\S[^\n]*)", t, re.M):
        for x in re.split(r"\s+or\s+|\s+and\s+|,\s*|\s*\|\s*", m.group(1).strip()):
            if x and x not in found:
                found.append(x)
    if not found:
        for k, v in (("GNU General Public License", "GPL"), ("GNU Lesser", "LGPL"), ("GNU Free Documentation", "GFDL"),
                     ("Apache License", "Apache-2.0"), ("public domain", "public-domain"), ("BSD", "BSD"),
                     ("MIT", "MIT"), ("Artistic", "Artistic"), ("Permission is hereby granted", "MIT-like"),
                     ("Permission to use, copy, modify", "ISC/BSD-like")):
            if k.lower() in t.lower() and v not in found:
                found.append(v)
    return ", ".join(found[:5]) + (", ..." if len(found) > 5 else "") if found else "unknown"


def chunks(text, n):
    """Split text into pieces of at most n characters, at line ends where possible."""
    out, i = [], 0
    while i < len(text):
        j = min(len(text), i + n)
        if j < len(text):
            k = text.rfind("\n", i + n // 2, j)
            j = k + 1 if k > 0 else j
        out.append(text[i:j])
        i = j
    return out


def package_docs(deb, rng, cap=None, paths=None, name=None):
    """Text files of a .deb: [(path, text)], at most `cap` bytes (PER_PACKAGE); files longer than
    MAX_FILE are cut into MAX_FILE pieces (gzip and dictzip members decompressed); `paths` a
    regex on the path inside the package.  Returns (docs, licence)."""
    cap = cap or PER_PACKAGE
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
        lic = licence(d, name) if name else "unknown"
        out, total = [], 0
        for p in files:
            rel = os.path.relpath(p, d)
            if os.path.basename(p) in ("tarfile.py", "copyright") or (paths and not re.search(paths, rel)):
                continue
            try:
                if p.endswith((".gz", ".dz")):
                    with gzip.open(p, "rb") as g:
                        b = g.read(cap + MAX_FILE)
                    rel = rel[:-3]
                else:
                    b = open(p, "rb").read(cap + MAX_FILE)
            except Exception:
                continue
            if len(b) < 200 or not is_text(b[:MAX_FILE]):
                continue
            t = b.decode("utf-8", "ignore")
            for k, piece in enumerate(chunks(t, MAX_FILE)):
                if len(piece) < 200:
                    continue
                out.append((rel if k == 0 else f"{rel}#{k}", piece))
                total += len(piece)
                if total >= cap:
                    break
            if total >= cap:
                break
        return out, lic


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


OLD_CLASS = {**{p_: "docs" for p_ in PACKAGES[:11]}, **{p_: "html" for p_ in PACKAGES[37:43]}}


def devset_packages():
    """Packages of the development set (training/devset/SOURCES.txt, second column: 'name version')."""
    if not os.path.exists(DEVSET):
        return set()
    out = set()
    for line in open(DEVSET):
        if line.startswith("#") or "\t" not in line:
            continue
        for part in line.split("\t")[1].split(","):
            w = part.split()
            if w and w[0] != "-":
                out.add(w[0])
    return out


def main():
    os.makedirs(DATA, exist_ok=True)
    rng = random.Random(1234)
    debdir = os.path.join(DATA, "debs")
    os.makedirs(debdir, exist_ok=True)
    extra = [p_ for ps in EXTRA.values() for p_ in ps]
    excluded = EXCLUDED | devset_packages()
    assert not excluded & set(PACKAGES + extra), excluded & set(PACKAGES + extra)
    have = {f.split("_")[0] for f in os.listdir(debdir) if f.endswith(".deb")}
    for pkg in PACKAGES + extra:  # one at a time: a package the mirror lacks is skipped, not fatal
        if pkg not in have and subprocess.run(["apt-get", "download", pkg], cwd=debdir).returncode != 0:
            print(f"skipped {pkg}: apt-get download failed", flush=True)
    docs, manifest, served, by_class, classes = [], [], [], {}, []

    def add(cls, name, ver, lic, what, ds):
        n = sum(map(len, ds))
        by_class[cls] = by_class.get(cls, 0) + n
        manifest.append(f"{name}\t{ver}\t{lic}\t{cls}\t{what}\t{n} bytes")
        print(manifest[-1], flush=True)
        docs.extend(ds)
        classes.extend([cls] * len(ds))

    for f in sorted(os.listdir(debdir)):
        if not f.endswith(".deb"):
            continue
        p = os.path.join(debdir, f)
        name = subprocess.run(["dpkg-deb", "-f", p, "Package"], capture_output=True, text=True).stdout.strip()
        ver = subprocess.run(["dpkg-deb", "-f", p, "Version"], capture_output=True, text=True).stdout.strip()
        if name in excluded or name not in set(PACKAGES + extra):
            continue
        d, lic = package_docs(p, rng, EXTRA_CAP.get(name), EXTRA_PATHS.get(name), name)
        add(CLASS_OF.get(name) or OLD_CLASS.get(name, "code"), name, ver, lic, f"{len(d)} files", [x for _, x in d])
        served += [(f"{name}/{rel}", x) for rel, x in d if len(x) <= traffic.MAX_SERVED]
    c, used = crate_sources(rng)
    for u in used:
        n_, v_, _, b_ = u.split("\t")
        manifest.append(f"{n_}\t{v_}\t(crates.io: see its Cargo.toml)\tcode\t-\t{b_}")
    by_class["code"] = by_class.get("code", 0) + sum(map(len, c))
    classes.extend(["code"] * len(c))
    manifest.append(f"(crates.io sources above, from Cargo.lock)\t-\t-\tcode\t{len(c)} files\t{sum(map(len, c))} bytes")
    docs += c
    t = traffic.nginx_traffic(served, random.Random(99), TRAFFIC)
    add("protocol+logs", f"(nginx {traffic.nginx_version()}: HTTP/1.1 exchanges + access/error logs, traffic.py)", "-",
        "generated here", f"{len(t)} docs", t)
    s = synth_traffic(rng, SYNTH)
    add("protocol+logs", "(synthetic traffic: HTTP exchanges, access logs, syslog, JSON)", "-", "generated here",
        f"{len(s)} docs", s)
    prose = [x for x in docs if "\n\n" in x[:2000] and x.count("<") < len(x) / 200][:4000]
    for what, cls, ds in corpus_extra.generated(random.Random(7), prose, served):
        add(cls, what, "-", "generated here", f"{len(ds)} docs", ds)
    u = corpus_extra.url_lists(random.Random(11), docs, URLS)
    add("urls", "(URL lists: every http(s) URL in the text above, deduplicated, shuffled; corpus_extra.py)", "-",
        "from the sources above", f"{len(u)} docs", u)
    order = list(range(len(docs)))
    rng.shuffle(order)
    docs = [docs[i] for i in order]
    with open(os.path.join(DATA, "corpus.txt"), "w") as fh:
        fh.write(EOT.join(docs))
    with open(os.path.join(DATA, "doc_classes.txt"), "w") as fh:  # one line per document of corpus.txt
        fh.write("".join(classes[i] + "\n" for i in order))
    with open(os.path.join(DATA, "classes.tsv"), "w") as fh:
        fh.write("".join(f"{k}\t{v}\n" for k, v in sorted(by_class.items())))
    with open(os.path.join(HERE, "packages.txt"), "w") as fh:
        fh.write("# package\tversion\tlicence (its copyright file)\tclass\tfiles\ttext bytes "
                 "(Debian bookworm main, apt-get download; crates.io; programs run here)\n" + "\n".join(manifest) + "\n")
    print("classes", by_class)
    print("corpus bytes", os.path.getsize(os.path.join(DATA, "corpus.txt")))


if __name__ == "__main__":
    main()
