#!/usr/bin/env python3
"""The development set's files (called by fetch_devset.sh: devset.py DEBS OUT pkg=version ...).

Each file is a 48 KiB slice of one package file (or of a few files of one package, concatenated
in the order listed), of the URLs found in the dev packages, or of text made here by running
postgres and git (times, pids and durations rewritten to fixed values).  See fetch_devset.sh.
"""
import glob, gzip, hashlib, os, re, shutil, subprocess, sys, time

debs, out = sys.argv[1], sys.argv[2]
ver = dict(a.split("=", 1) for a in sys.argv[3:])
HERE = os.path.dirname(os.path.abspath(__file__))
N = 49152
GO = "/usr/share/gocode/src/golang.org/x/net"
RACK = "/usr/share/rubygems-integration/all/gems/rack-2.2.22/lib/rack"
MD = "/usr/lib/python3/dist-packages/markdown"
# name, class, package, paths in the package, offset of the slice
SPECS = [
    ("prose-devils-dictionary.txt", "prose", "dict-devil", ["/usr/share/dictd/devil.dict.dz"], 16384),
    ("prose-puzzles-manual.txt", "prose", "sgt-puzzles", ["/usr/share/doc/sgt-puzzles/puzzles.txt.gz"], 0),
    ("page-go1-release.html", "html", "golang-golang-x-net-dev", [GO + "/html/testdata/go1.html"], 0),
    ("page-r-faq.html", "html", "r-doc-html", ["/usr/share/R/doc/manual/R-FAQ.html"], 0),
    ("page-debian-history.html", "html", "debian-history", ["/usr/share/doc/debian-history/docs/detailed.en.html"], 0),
    ("urls-devpackages.txt", "urls", "(all dev packages above and below)", ["urls"], 0),
    ("code-rack.rb", "code", "ruby-rack", [RACK + "/utils.rb", RACK + "/request.rb", RACK + "/response.rb"], 0),
    ("code-html-parse.go", "code", "golang-golang-x-net-dev", [GO + "/html/parse.go"], 0),
    ("code-markdown.py", "code", "python3-markdown", [MD + "/inlinepatterns.py", MD + "/blockprocessors.py"], 0),
    ("data-mime-db.json", "data", "node-mime", ["/usr/share/nodejs/mime-db/db.json"], 0),
    ("data-breast-cancer.csv", "data", "python3-sklearn",
     ["/usr/lib/python3/dist-packages/sklearn/datasets/data/breast_cancer.csv"], 0),
    ("conf-exim4.conf", "config", "exim4-config", ["/etc/exim4/exim4.conf.template"], 0),
    ("conf-unbound.conf", "config", "unbound", ["/usr/share/doc/unbound/examples/unbound.conf"], 0),
    ("log-postgres.log", "logs", "(postgres 15 run here)", ["postgres"], 0),
    ("log-git-trace2.log", "logs", "(git run here)", ["gittrace2"], 0),
    ("proto-git-packets.txt", "protocol", "(git run here)", ["gitpackets"], 0),
    ("nonen-ru-tcp.7", "non-english", "manpages-ru", ["/usr/share/man/ru/man7/tcp.7.gz"], 8192),
    ("nonen-de-puzzles.txt", "non-english", "sgt-puzzles", ["/usr/share/doc/sgt-puzzles/puzzles.txt.de.gz"], 0),
]
EXPECTED = {  # sha256 of each file as built from the pinned versions (postgres 15.18, git 2.47.3 for the generated three)
    "prose-devils-dictionary.txt": "7a9d7fb76491650d9272d405da4417a78cc82164eac4ce0a79c81ae729aa386b",
    "prose-puzzles-manual.txt": "3e72dab1df8e01c5bc7eb7143e4c50756adc67880b6147f29e983e4057b5bc90",
    "page-go1-release.html": "1e9f8d18e19a95184e226f0aa95983e61d3ed62290c9e399a5505e60a1c53f68",
    "page-r-faq.html": "e62bbc7b28c12ab9c9b96410afd3f8470393fb408e0bcb9fe83f191582092e30",
    "page-debian-history.html": "a23e87156197d834c48d5d932e44624fd5f6e06f6705177a2f0bf656d2ba2df9",
    "urls-devpackages.txt": "9705092002fd980ce92770b72bf69662b4c93abcf9c9eaf6b85a1f24a0a30945",
    "code-rack.rb": "da77a24b10a7c70ebc5446aa9e70e8aacf9b32bb17bc8a2b7f5b6bc6f7323eb7",
    "code-html-parse.go": "ba9ea23221dd1e42930fb031e0e78f543ca61e03c25b6ac06e9cf8a30c506af7",
    "code-markdown.py": "4f46d2475f2f67566ab473c7853f90180e570e0cda65a943875c29c7edd9d42b",
    "data-mime-db.json": "1d47a6a06c5514b2055670c1bbc49082a86a7be076c6cbbc7e15d2b63069ec2c",
    "data-breast-cancer.csv": "46ac46054609347fef8e400d3ca6f32885a210ae73c3a3a16ec441bcc98f17df",
    "conf-exim4.conf": "4f9cf566c430ff7d750696e366540a5c01fc3a917f98dc612774afa7f48caa5b",
    "conf-unbound.conf": "abb8c558a1c5dd7008feded72d2313ee60f8bb5f10cfec40066004082490f4e8",
    "log-postgres.log": "7c5b55c8e98674443acc0369d799515dedda648ad3db4156a836455617b49867",
    "log-git-trace2.log": "992b15d92c758d84c5629f9a91d28a8ca2b1a35e3e968845e2bca924cb8b1e0d",
    "proto-git-packets.txt": "d18109bb9f500ae1cb9dd871bfa1b7cef0ace527b214b2eaef5eeedd29f0b93e",
    "nonen-ru-tcp.7": "2e1f521ceb55b98e00c8cdb94126cffb33c69fedfb3a39457e78b8c07e06a5aa",
    "nonen-de-puzzles.txt": "30f4833dee97ff2e816a1097650b4810a89495e462aac9ac33c815c57db43ac6",
}
BASE = 1_767_261_600  # 2026-01-01 10:00:00 UTC: the fixed clock of the generated logs


def read(pkg, path):
    p = os.path.join(debs, pkg) + path
    if p.endswith((".gz", ".dz")):
        with gzip.open(p) as f:
            return f.read()
    return open(p, "rb").read()


def urls():
    seen = {}
    for pkg in sorted(ver):
        for root, _, names in sorted(os.walk(os.path.join(debs, pkg))):
            for n in sorted(names):
                p = os.path.join(root, n)
                if os.path.islink(p) or not n.endswith((".html", ".txt", ".go", ".rb", ".py", ".json", ".md", ".conf",
                                                        ".template", ".gz", "copyright")):
                    continue
                try:
                    t = read(pkg, p[len(os.path.join(debs, pkg)):]).decode("utf-8", "ignore")
                except Exception:
                    continue
                for u in re.findall(r"""https?://[A-Za-z0-9.-]+(?::\d+)?(?:/[^\s<>"'`)\]}|\\^]*)?""", t):
                    u = u.rstrip(".,;:!?*'&")
                    if 10 < len(u) < 300:
                        seen.setdefault(u, None)
    return ("\n".join(seen) + "\n").encode()


class Clock:
    """Rewrites times, pids and durations in a log to fixed values, in order of appearance."""

    def __init__(self):
        self.us, self.pids = BASE * 10 ** 6, {}

    def tick(self, us):
        """The next time: (seconds, microseconds)."""
        self.us += us
        return divmod(self.us, 10 ** 6)


def postgres_log():
    pgbin = "/usr/lib/postgresql/15/bin"
    d = "/tmp/llmpack-devset-pg"
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_pg:
        shutil.chown(d, "postgres", "postgres")
    env = dict(os.environ, LC_ALL="C", TZ="UTC", PGTZ="UTC")
    subprocess.run(as_pg + [f"{pgbin}/initdb", "-D", f"{d}/data", "-U", "admin", "--no-sync", "-E", "UTF8", "--locale", "C"],
                   check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = open(f"{d}/server.log", "wb")
    srv = subprocess.Popen(as_pg + [f"{pgbin}/postgres", "-D", f"{d}/data", "-k", d, "-p", "54329", "-c", "listen_addresses=",
                                    "-c", "log_statement=all", "-c", "log_connections=on", "-c", "log_disconnections=on",
                                    "-c", "log_checkpoints=off", "-c", "autovacuum=off", "-c", "log_min_messages=info",
                                    "-c", "log_line_prefix=%m [%p] %q%u@%d ", "-c", "log_timezone=UTC",
                                    "-c", "log_error_verbosity=default"],
                           env=env, stderr=log, stdout=log)
    try:
        for _ in range(200):  # the log, not a probe connection: the log must not depend on timing
            if b"ready to accept connections" in open(f"{d}/server.log", "rb").read():
                break
            __import__("time").sleep(0.05)
        sessions = []
        sessions.append("""CREATE DATABASE shop;""")
        ddl = """CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text UNIQUE, country char(2), created timestamptz DEFAULT now());
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int REFERENCES customers(id), total numeric(10,2) CHECK (total >= 0), status text DEFAULT 'new');
CREATE INDEX orders_customer_idx ON orders (customer_id);"""
        sessions.append(ddl)
        names = ["Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra", "Barbara Liskov", "Donald Knuth",
                 "Frances Allen", "Ken Thompson", "Dennis Ritchie", "Margaret Hamilton", "John McCarthy", "Radia Perlman"]
        for i in range(60):
            n = names[i % len(names)]
            cc = ["DE", "FR", "US", "GB", "NL", "SE", "JP", "BR"][i % 8]
            s = [f"INSERT INTO customers (name, email, country) VALUES ('{n}', '{n.split()[0].lower()}{i}@example.org', '{cc}') RETURNING id;"]
            s.append(f"BEGIN;\nINSERT INTO orders (customer_id, total) VALUES ({i % 12 + 1}, {(i * 37) % 500}.{i % 100:02d});\n"
                     f"UPDATE orders SET status = 'paid' WHERE customer_id = {i % 12 + 1} AND status = 'new';\nCOMMIT;")
            if i % 7 == 3:
                s.append(f"INSERT INTO customers (name, email) VALUES ('{n}', '{n.split()[0].lower()}{i - 1}@example.org');")
            if i % 9 == 4:
                s.append(f"INSERT INTO orders (customer_id, total) VALUES (9999, -{i});")
            if i % 11 == 5:
                s.append("SELEC name FROM customers;")
            if i % 5 == 0:
                s.append(f"SELECT c.name, count(o.id), sum(o.total) FROM customers c LEFT JOIN orders o ON o.customer_id = c.id "
                         f"WHERE c.country = '{cc}' GROUP BY c.name ORDER BY 3 DESC NULLS LAST LIMIT 10;")
            if i % 13 == 6:
                s.append("SELECT 1 / (SELECT count(*) FROM orders WHERE total > 1e9);")
            if i % 17 == 8:
                s.append("VACUUM ANALYZE orders;\nEXPLAIN SELECT * FROM orders WHERE customer_id = 3;")
            sessions.append("\n".join(s))
        sessions.append("SELECT pg_size_pretty(pg_database_size('shop'));\nDROP TABLE IF EXISTS missing_table;\nDROP TABLE no_such_table;")
        for k, sql in enumerate(sessions):
            db = "postgres" if k == 0 else "shop"
            if k == 1:
                sql = ddl + "\nCREATE ROLE app LOGIN; CREATE ROLE report LOGIN;\nGRANT ALL ON ALL TABLES IN SCHEMA public TO app;\n" \
                            "GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO app;\nGRANT SELECT ON ALL TABLES IN SCHEMA public TO report;"
            user = "admin" if k < 2 else ("report" if "SELECT c.name" in sql and k % 2 else "app")
            subprocess.run([f"{pgbin}/psql", "-X", "-q", "-h", d, "-p", "54329", "-U", user, "-d", db, "-c", sql],
                           env=env, capture_output=True)
            for _ in range(200):  # the session's last line is in the log before the next session starts
                if open(f"{d}/server.log", "rb").read().count(b"disconnection:") > k:
                    break
                time.sleep(0.02)
    finally:
        subprocess.run(as_pg + [f"{pgbin}/pg_ctl", "-D", f"{d}/data", "-m", "fast", "stop"], capture_output=True)
        srv.wait()
        log.close()
    t = open(f"{d}/server.log", "rb").read().decode("utf-8", "replace")
    shutil.rmtree(d, ignore_errors=True)
    c = Clock()
    lines = []
    for line in t.splitlines():
        m = re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC \[(\d+)\] ", line)
        if m:
            sec, us = c.tick(3000 if "statement:" in line else 11000)
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(sec)) + f".{us // 1000:03d} UTC"
            line = f"{stamp} [{c.pids.setdefault(m.group(1), 4100 + 37 * len(c.pids))}] " + line[m.end():]
        line = re.sub(r"shut down at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", "shut down at 2026-01-01 09:59:58 UTC", line)
        line = re.sub(r"session time: \d+:\d\d:\d\d\.\d+", "session time: 0:00:00.012", line)
        line = re.sub(r"port=\d+", "port=[local]", line)
        line = re.sub(r"PID \d+", "PID 4100", line)
        lines.append(line)
    return ("\n".join(lines) + "\n").encode()


def git_runs():
    """(trace2 log, packet trace) of a fixed series of git commands on local repositories."""
    d = "/tmp/llmpack-devset-git"
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    env = dict(os.environ, GIT_AUTHOR_NAME="Ada Lovelace", GIT_AUTHOR_EMAIL="ada@example.org",
               GIT_COMMITTER_NAME="Ada Lovelace", GIT_COMMITTER_EMAIL="ada@example.org", HOME=d,
               GIT_CONFIG_NOSYSTEM="1", LC_ALL="C", TZ="UTC", GIT_TRACE_PACKET=f"{d}/packets.log")
    os.makedirs(f"{d}/trace2")
    date = [BASE]

    quiet = ["env", "-u", "GIT_TRACE_PACKET", "-u", "GIT_TRACE2"]  # the serving side: traced by the client only

    def git(*a, cwd=None):
        date[0] += 3600
        # one trace2 folder per command: each process writes a file of its own (no interleaving)
        t2 = f"{d}/trace2/{len(os.listdir(f'{d}/trace2')):03d}"
        os.makedirs(t2)
        e = dict(env, GIT_AUTHOR_DATE=f"@{date[0]} +0000", GIT_COMMITTER_DATE=f"@{date[0]} +0000", GIT_TRACE2=t2)
        a = list(a)
        if a[0] in ("clone", "fetch", "ls-remote", "push"):  # several processes: their trace2 order varies
            e.pop("GIT_TRACE2")
        if a[0] in ("clone", "fetch", "ls-remote"):
            a.insert(1, "--upload-pack=" + " ".join(quiet + ["git-upload-pack"]))
        if a[0] == "push":  # push's sideband thread and main thread write in either order: not traced
            a.insert(1, "--receive-pack=" + " ".join(quiet + ["git-receive-pack"]))
            e.pop("GIT_TRACE_PACKET", None)
        return subprocess.run(["git", *a], cwd=cwd or f"{d}/origin", env=e, capture_output=True, text=True)

    os.makedirs(f"{d}/origin")
    git("init", "-q", "-b", "main")
    git("config", "gc.auto", "0")
    files = sorted(glob.glob(os.path.join(debs, "ruby-rack") + RACK + "/*.rb"))[:24]
    for i, f in enumerate(files):
        shutil.copy(f, f"{d}/origin/{os.path.basename(f)}")
        git("add", os.path.basename(f))
        git("commit", "-q", "-m", f"Add {os.path.basename(f)}\n\nImported from rack 2.2.22 ({i + 1}/{len(files)}).")
        if i % 6 == 5:
            git("tag", "-a", f"v0.{i // 6}", "-m", f"release 0.{i // 6}")
            git("branch", f"feature/{os.path.basename(f)[:-3]}")
    git("clone", "-q", "--no-local", f"file://{d}/origin", f"{d}/clone", cwd=d)
    git("config", "receive.denyCurrentBranch", "ignore")
    git("clone", "-q", "--mirror", "--no-local", f"file://{d}/origin", f"{d}/mirror", cwd=d)
    for i in range(6):
        p = f"{d}/clone/{os.path.basename(files[i])}"
        open(p, "a").write(f"\n# change {i}\n")
        git("commit", "-qam", f"Note change {i}", cwd=f"{d}/clone")
        git("push", "-q", "origin", "main", cwd=f"{d}/clone")
        if i % 2:
            git("tag", f"build-{i}", cwd=f"{d}/origin")
        git("fetch", "-q", "--prune", "origin", cwd=f"{d}/mirror")
        git("ls-remote", "--tags", f"file://{d}/origin", cwd=d)
        git("log", "--oneline", "-3", cwd=f"{d}/clone")
        git("status", "--short", cwd=f"{d}/clone")
        git("diff", "HEAD~1", "--stat", cwd=f"{d}/clone")
        git("rev-parse", "HEAD", cwd=f"{d}/clone")
        git("show", "--name-only", cwd=f"{d}/clone")
        git("branch", "-a", cwd=f"{d}/clone")
    git("fetch", "-q", "--tags", cwd=f"{d}/clone")
    git("clone", "-q", "--depth", "3", "--no-local", f"file://{d}/origin", f"{d}/shallow", cwd=d)
    git("fetch", "-q", "--unshallow", cwd=f"{d}/shallow")
    git("ls-remote", f"file://{d}/origin", cwd=d)
    t2 = ""
    for sub in sorted(os.listdir(f"{d}/trace2")):  # per command, its processes in the order they started
        fs = [open(os.path.join(d, "trace2", sub, f), errors="replace").read() for f in os.listdir(f"{d}/trace2/{sub}")]
        t2 += "".join(sorted(fs, key=lambda x: ("start git clone" not in x, re.sub(r"(?m)^\S+ ", "", x))))
    pk = open(f"{d}/packets.log", "rb").read().decode("utf-8", "replace")
    shutil.rmtree(d, ignore_errors=True)

    def norm(t, c):
        out = []
        for line in t.splitlines():
            if "cmd_ancestry" in line or " atexit " in line:  # the callers (differ by machine); atexit/exit order varies
                continue
            m = re.match(r"\d\d:\d\d:\d\d\.\d{6} ", line)
            if m:
                sec, us = c.tick(137)
                line = time.strftime("%H:%M:%S", time.gmtime(sec)) + f".{us:06d} " + line[m.end():]
            line = re.sub(r"^(\S+ )(setup\.c:\d+)", lambda m: m.group(1) + "git.c:752".ljust(len(m.group(2))), line) \
                if " exit " in line else line  # a process exits through either, by timing
            line = re.sub(r"(elapsed|t_abs|t_rel)[:=]\d+\.\d+", r"\1:0.001000", line)
            line = re.sub(r"(agent=git/[\w.]+)", r"\1", line)
            line = re.sub(r"\b(pid|ppid)\b[ :=]*\d+", r"\1 4100", line)
            line = re.sub(r"/tmp/llmpack-devset-git", "/srv/git", line)
            line = re.sub(r"session-id=\S+", "session-id=0", line)
            out.append(line)
        return ("\n".join(out) + "\n").encode()
    return norm(t2, Clock()), norm(pk, Clock())


def gather(pkg, paths):
    return b"".join(read(pkg, p) for p in paths)


def packages_elsewhere():
    """Packages of the training corpus (packages.txt + build_corpus.py's lists) and the held-out set."""
    names = set()
    for line in open(os.path.join(HERE, "packages.txt")):
        if not line.startswith("#"):
            names.add(line.split("\t")[0])
    src = open(os.path.join(HERE, "build_corpus.py")).read()
    names |= set(re.findall(r'"([a-z0-9][a-z0-9.+-]+)"', src))
    for line in open(os.path.join(HERE, "heldout", "SOURCES.txt")):
        if "\t" in line:
            names |= {p.split()[0] for p in line.split("\t")[1].split(", ") if p.split()}
    return names


gen = {}
made = {}
lines = ["Development-set files: 48 KiB (49152 bytes) each, rebuilt by training/fetch_devset.sh from Debian bookworm",
         "packages (apt-get download + dpkg-deb -x) and programs run here; none of these packages is in the training",
         "corpus (training/packages.txt) or the held-out set; no compression benchmark.  Every model choice is made on",
         "this set.",
         "# file\tpackage version\tclass\tsource\tsha256"]
bad = 0
clash = packages_elsewhere() & set(ver)
if clash:
    sys.exit(f"devset.py: these dev packages are also training or held-out packages: {sorted(clash)}")
pg_ver = subprocess.run(["/usr/lib/postgresql/15/bin/postgres", "--version"], capture_output=True, text=True).stdout.strip()
git_ver = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip()
for name, cls, pkg, paths, off in SPECS:
    if paths == ["urls"]:
        data, src, vers = urls(), "every http(s) URL in the text files of the dev packages, deduplicated, in order of first appearance", "-"
    elif paths == ["postgres"]:
        data, vers = postgres_log(), pg_ver
        src = "server log (log_statement=all, connections) of a fixed SQL session; times/pids rewritten"
    elif paths[0].startswith("git"):
        if "git" not in gen:
            gen["git"] = git_runs()
        data = gen["git"][0 if paths == ["gittrace2"] else 1]
        vers = git_ver
        src = ("GIT_TRACE2 of " if paths == ["gittrace2"] else "GIT_TRACE_PACKET of ") + \
              "a fixed series of commits, clones, pushes and fetches over file:// (pushes not traced); times/pids rewritten"
    else:
        data, vers = gather(pkg, paths), f"{pkg} {ver[pkg]}"
        src = " + ".join(paths)
    data = data[off:off + N]
    if len(data) < N:
        print(f"    warning: {name} has only {len(data)} bytes")
    src += f", bytes {off}..{off + len(data)}"
    with open(os.path.join(out, name + ".part"), "wb") as f:
        f.write(data)
    os.replace(os.path.join(out, name + ".part"), os.path.join(out, name))
    made[name] = data
    h = hashlib.sha256(data).hexdigest()
    exp = EXPECTED.get(name)
    flag = "" if exp in (None, h) else "   <-- differs from the expected sha256"
    bad += bool(flag)
    lines.append(f"{name}\t{vers}\t{cls}\t{src}\t{h}{flag}")
    print(f"    {name:30s} {h[:16]}  {vers}{flag}")
with open(os.path.join(out, "SOURCES.txt"), "w") as f:
    f.write("\n".join(lines) + "\n")
corpus = os.path.join(HERE, "data", "corpus.txt")
if os.path.exists(corpus):  # no 256-byte piece of a dev file in the training corpus
    big = open(corpus, "rb").read()
    for name, data in made.items():
        hits = sum(data[i:i + 256] in big for i in range(0, len(data) - 256, 4096))
        if hits:
            # reported, not fatal: generator boilerplate can match (texi2any's header in page-r-faq.html does)
            print(f"    overlap: {hits} of {len(range(0, len(data) - 256, 4096))} pieces of {name} are in corpus.txt")
    print("    checked against", corpus)
sys.exit(2 if bad else 0)
