#!/usr/bin/env python3
"""Text made by running programs on this machine, for the training corpus (build_corpus.py):

- redis-server (a child process on 127.0.0.1 with a generated config): RESP exchanges exactly as
  on the wire (RESP2 and RESP3, strings, hashes, lists, sets, sorted sets, streams, INFO, CLIENT
  LIST, errors), the MONITOR feed and the server's verbose log;
- SMTP: Python's smtplib client against a small ESMTP responder here (Postfix-like replies),
  sending MIME mail built with the email package (plain, quoted-printable, base64, multipart
  with HTML and attachments, replies quoting earlier mail); the exchanges as on the wire, the
  same mail as mbox files, and a Postfix-style mail log of the sessions;
- URL lists: every http(s) URL in the corpus's text, deduplicated and shuffled, as plain lists,
  Markdown and HTML link lists, CSV and JSON.

Bodies, keys and values come from the corpus's own text (prose and package files).
`python3 training/corpus_extra.py` alone prints the sizes of a small run.
"""
import email.policy, email.utils, json, os, random, re, shutil, socket, socketserver, subprocess
import tempfile, threading, time
from email.message import EmailMessage

FIRST = ("Alice Bob Carol Dave Erin Frank Grace Heidi Ivan Judy Mallory Niaj Olivia Peggy Rupert Sybil Trent "
         "Victor Walter Zoe Anna Lukas Marie Pierre Sofia Mateo Yuki Chen Priya Omar Fatima Jonas Ingrid").split()
LAST = ("Smith Jones Miller Brown Wilson Taylor Martin Schmidt Dubois Rossi Garcia Novak Kowalski Tanaka Li "
        "Singh Haddad Larsen Berg Murphy O'Brien Fischer Moreau Costa").split()
DOMAINS = ["example.org", "example.com", "example.net", "mail.example.org", "lists.example.org",
           "corp.example.com", "uni.example.edu", "dev.example.io"]


def _words(texts, rng, n=4000):
    w = []
    for t in rng.sample(texts, min(len(texts), 200)):
        w += re.findall(r"[A-Za-z][a-z]{2,14}", t[:5000])
    return w[:n] or ["alpha", "beta", "gamma"]


def _paragraphs(texts, rng, k):
    out = []
    while len(out) < k:
        t = rng.choice(texts)
        ps = [p.strip() for p in t.split("\n\n") if 80 < len(p.strip()) < 1500]
        if ps:
            i = rng.randrange(len(ps))
            out += ps[i:i + rng.randint(1, 4)]
    return out[:k]


# ------------------------------------------------------------------------------------ redis

def _resp(args):
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a.encode() if isinstance(a, str) else a
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def _resp_end(buf, i=0):
    """Index just past one complete RESP2/RESP3 reply starting at buf[i], or None if incomplete."""
    j = buf.find(b"\r\n", i)
    if j < 0:
        return None
    t, line = buf[i:i + 1], buf[i + 1:j]
    if t in b"+-:,#_(":
        return j + 2
    if t in b"$=!":
        n = int(line)
        if n < 0:
            return j + 2
        return j + 2 + n + 2 if len(buf) >= j + 2 + n + 2 else None
    if t in b"*~>%|":
        n = int(line)
        if t in b"%|":
            n *= 2
        k = j + 2
        for _ in range(max(n, 0)):
            k = _resp_end(buf, k)
            if k is None:
                return None
        return k
    raise ValueError(f"not RESP: {buf[i:i + 40]!r}")


def _redis_commands(rng, words, values):
    w = lambda: rng.choice(words).lower()
    key = lambda: rng.choice([f"user:{rng.randrange(1, 5000)}", f"session:{rng.getrandbits(64):016x}",
                              f"cache:/api/v1/{w()}/{rng.randrange(1000)}", f"{w()}:{w()}", f"queue:{w()}",
                              f"rate:{rng.randrange(1, 255)}.{rng.randrange(255)}.{rng.randrange(255)}.{rng.randrange(255)}",
                              f"lock:{w()}", f"counter:{w()}"])
    cmds = []
    if rng.random() < 0.3:
        cmds.append(["HELLO", "3"])
    if rng.random() < 0.5:
        cmds.append(["CLIENT", "SETNAME", f"{w()}-worker-{rng.randrange(20)}"])
    for _ in range(rng.randint(10, 80)):
        r = rng.random()
        k = key()
        if r < 0.15:
            cmds.append(["SET", k, rng.choice(values)] + (["EX", str(rng.choice([60, 300, 3600, 86400]))] if rng.random() < .5 else []))
            cmds.append(["GET", k])
        elif r < 0.25:
            h = f"user:{rng.randrange(1, 5000)}"
            cmds.append(["HSET", h, "name", f"{rng.choice(FIRST)} {rng.choice(LAST)}", "email",
                         f"{rng.choice(FIRST).lower()}@{rng.choice(DOMAINS)}", "visits", str(rng.randrange(1000)),
                         "last_seen", str(1_700_000_000 + rng.randrange(10 ** 7))])
            cmds.append(rng.choice([["HGETALL", h], ["HGET", h, "email"], ["HINCRBY", h, "visits", "1"], ["HKEYS", h]]))
        elif r < 0.35:
            q = f"queue:{w()}"
            cmds.append(["RPUSH", q] + [json.dumps({"job": w(), "id": rng.randrange(10 ** 6), "args": [w(), w()]})
                                        for _ in range(rng.randint(1, 5))])
            cmds.append(rng.choice([["LRANGE", q, "0", "-1"], ["LPOP", q], ["LLEN", q], ["BLPOP", q, "1"]]))
        elif r < 0.45:
            z = f"leaderboard:{w()}"
            args = []
            for _ in range(rng.randint(2, 8)):
                args += [str(rng.randrange(10000)), w()]
            cmds.append(["ZADD", z] + args)
            cmds.append(rng.choice([["ZRANGE", z, "0", "-1", "WITHSCORES"], ["ZREVRANGE", z, "0", "4"],
                                    ["ZSCORE", z, w()], ["ZCARD", z]]))
        elif r < 0.52:
            s = f"tags:{w()}"
            cmds.append(["SADD", s] + [w() for _ in range(rng.randint(1, 6))])
            cmds.append(rng.choice([["SMEMBERS", s], ["SISMEMBER", s, w()], ["SCARD", s]]))
        elif r < 0.58:
            st = f"events:{w()}"
            cmds.append(["XADD", st, "*", "type", w(), "user", str(rng.randrange(5000)), "path", f"/{w()}/{w()}"])
            cmds.append(["XRANGE", st, "-", "+", "COUNT", "5"])
        elif r < 0.66:
            c = f"counter:{w()}"
            cmds.append(rng.choice([["INCR", c], ["INCRBY", c, str(rng.randrange(1, 100))], ["DECR", c]]))
            cmds.append(["EXPIRE", c, str(rng.choice([30, 60, 3600]))])
            cmds.append(["TTL", c])
        elif r < 0.72:
            ks = [key() for _ in range(rng.randint(2, 5))]
            cmds.append(["MSET"] + [x for kk in ks for x in (kk, rng.choice(values)[:200])])
            cmds.append(["MGET"] + ks)
        elif r < 0.76:
            cmds.append(["MULTI"]); cmds.append(["INCR", f"counter:{w()}"]); cmds.append(["SET", k, w()])
            cmds.append(["EXEC"])
        elif r < 0.80:
            cmds.append(rng.choice([["KEYS", f"{w()}:*"], ["SCAN", "0", "MATCH", "user:*", "COUNT", "100"],
                                    ["DBSIZE"], ["TYPE", k], ["EXISTS", k], ["DEL", k], ["OBJECT", "ENCODING", k]]))
        elif r < 0.84:
            cmds.append(rng.choice([["INFO", rng.choice(["server", "memory", "stats", "clients", "keyspace",
                                                         "persistence", "replication", "cpu"])],
                                    ["CLIENT", "LIST"], ["CLIENT", "INFO"], ["CONFIG", "GET", "maxmemory*"],
                                    ["CONFIG", "GET", rng.choice(["save", "appendonly", "timeout", "databases"])],
                                    ["SLOWLOG", "GET", "5"], ["MEMORY", "USAGE", k], ["COMMAND", "COUNT"], ["TIME"]]))
        elif r < 0.88:
            cmds.append(rng.choice([["GET"], ["HGET", k], ["LPUSH"], [w().upper(), k], ["INCR", f"user:{rng.randrange(9)}x"],
                                    ["SET", k, "1", "EX", "-5"]]))  # errors
        elif r < 0.92:
            cmds.append(["PUBLISH", f"channel:{w()}", json.dumps({"event": w(), "at": 1_700_000_000 + rng.randrange(10 ** 6)})])
        else:
            cmds.append(rng.choice([["PING"], ["ECHO", " ".join(w() for _ in range(5))], ["SELECT", str(rng.randrange(4))],
                                    ["GETDEL", k], ["APPEND", k, w()], ["STRLEN", k], ["SETNX", f"lock:{w()}", str(os.getpid())]]))
    cmds.append(["QUIT"])
    return cmds


def redis_traffic(rng, texts, budget):
    """RESP exchanges with a real redis-server, its MONITOR feed and its log."""
    exe = shutil.which("redis-server")
    if not exe:
        print("corpus_extra: no redis-server, skipped", flush=True)
        return [], []
    words = _words(texts, rng)
    values = [json.dumps({"id": rng.randrange(10 ** 6), "name": rng.choice(words), "tags": rng.sample(words, 3),
                          "score": round(rng.random() * 100, 3), "active": rng.random() < .5}) for _ in range(300)]
    values += [p[:rng.randrange(20, 400)] for p in _paragraphs(texts, rng, 200)]
    values += [str(rng.randrange(10 ** 9)) for _ in range(100)]
    root = tempfile.mkdtemp(prefix="llmpack-redis-")
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    log = os.path.join(root, "redis.log")
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", root, "--logfile", log, "--loglevel", "verbose", "--daemonize", "no",
                             "--databases", "4", "--protected-mode", "yes"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close(); break
            except OSError:
                time.sleep(0.05)
        mon = socket.create_connection(("127.0.0.1", port))
        mon.sendall(_resp(["MONITOR"]))
        feed = []
        def reader():
            while True:
                try:
                    c = mon.recv(65536)
                except OSError:
                    return
                if not c:
                    return
                feed.append(c)
        th = threading.Thread(target=reader, daemon=True); th.start()
        docs, total = [], 0
        while total < budget:
            conn = socket.create_connection(("127.0.0.1", port))
            conn.settimeout(5)
            parts = []
            for cmd in _redis_commands(rng, words, values):
                req = _resp(cmd)
                if rng.random() < 0.1 and all(" " not in a and a for a in cmd):
                    req = (" ".join(cmd) + "\r\n").encode()  # inline command, as redis-cli --no-raw | nc would send
                conn.sendall(req)
                buf = b""
                while True:
                    try:
                        c = conn.recv(65536)
                    except socket.timeout:
                        break
                    if not c:
                        break
                    buf += c
                    if _resp_end(buf) is not None:
                        break
                parts += [req, buf]
            conn.close()
            d = b"".join(parts).decode("utf-8", "replace")
            docs.append(d); total += len(d)
        time.sleep(0.3)
        mon.close()
        m = b"".join(feed).decode("utf-8", "replace")
        logs = [m[i:i + 200_000] for i in range(0, len(m), 200_000)]
    finally:
        proc.terminate(); proc.wait()
    logs.append(open(log, errors="replace").read())
    shutil.rmtree(root, ignore_errors=True)
    return docs, logs


# ------------------------------------------------------------------------------------- SMTP

class _SMTPHandler(socketserver.StreamRequestHandler):
    def handle(self):
        srv = self.server
        rec = srv.records.setdefault(self.client_address, [])
        qid = None

        def say(line):
            b = (line + "\r\n").encode()
            rec.append(b); self.wfile.write(b)
        say(f"220 {srv.host} ESMTP Postfix (Debian/GNU)")
        while True:
            line = self.rfile.readline()
            if not line:
                return
            rec.append(line)
            cmd = line.decode("utf-8", "replace").strip()
            up = cmd.upper()
            if up.startswith(("EHLO", "HELO")):
                if up.startswith("HELO"):
                    say(f"250 {srv.host}")
                    continue
                for i, cap in enumerate([srv.host, "PIPELINING", "SIZE 10240000", "VRFY", "ETRN", "STARTTLS",
                                         "ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8", "CHUNKING"]):
                    say(f"250{' ' if i == 10 else '-'}{cap}")
            elif up.startswith("MAIL FROM"):
                qid = "".join(srv.rng.choice("0123456789ABCDEF") for _ in range(10))
                say("250 2.1.0 Ok")
            elif up.startswith("RCPT TO"):
                addr = cmd[8:].strip(" <>")
                if addr.split("@")[0].startswith(("nobody", "olduser")):
                    say(f"550 5.1.1 <{addr}>: Recipient address rejected: User unknown in local recipient table")
                else:
                    say("250 2.1.5 Ok")
            elif up == "DATA":
                say("354 End data with <CR><LF>.<CR><LF>")
                while True:
                    l2 = self.rfile.readline()
                    if not l2:
                        return
                    rec.append(l2)
                    if l2 == b".\r\n":
                        break
                say(f"250 2.0.0 Ok: queued as {qid}")
            elif up == "RSET":
                say("250 2.0.0 Ok")
            elif up == "NOOP":
                say("250 2.0.0 Ok")
            elif up.startswith("VRFY"):
                say("252 2.0.0 " + cmd[5:])
            elif up == "QUIT":
                say("221 2.0.0 Bye")
                return
            else:
                say("502 5.5.2 Error: command not recognized")


class _SMTPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def _mail(rng, paras, files, prev):
    def person():
        f, l = rng.choice(FIRST), rng.choice(LAST)
        return f"{f} {l}", f"{f.lower()}.{l.lower().replace(chr(39), '')}@{rng.choice(DOMAINS)}"
    (fn, fa), to = person(), [person() for _ in range(rng.randint(1, 3))]
    m = EmailMessage(policy=email.policy.SMTP)
    m["From"] = email.utils.formataddr((fn, fa))
    m["To"] = ", ".join(email.utils.formataddr(t) for t in to)
    if rng.random() < 0.3:
        m["Cc"] = email.utils.formataddr(person())
    body = "\n\n".join(rng.sample(paras, rng.randint(1, 4)))
    subj = " ".join(body.split()[:rng.randint(3, 9)])[:70]
    if prev and rng.random() < 0.4:
        subj = "Re: " + prev["Subject"].replace("Re: ", "")
        m["In-Reply-To"] = prev["Message-ID"]
        m["References"] = prev["Message-ID"]
        quoted = "\n".join("> " + l for l in prev.get_body(("plain",)).get_content().splitlines()[:20])
        body = f"On {prev['Date']}, {prev['From']} wrote:\n{quoted}\n\n{body}"
    m["Subject"] = subj
    m["Date"] = email.utils.format_datetime(email.utils.localtime() if False else
                                            __import__("datetime").datetime(2024, rng.randint(1, 12), rng.randint(1, 28),
                                                                            rng.randrange(24), rng.randrange(60), rng.randrange(60),
                                                                            tzinfo=__import__("datetime").timezone.utc))
    m["Message-ID"] = f"<{rng.getrandbits(60):x}.{rng.randrange(10 ** 6)}@{fa.split('@')[1]}>"
    m["MIME-Version"] = "1.0"
    if rng.random() < 0.5:
        m["User-Agent"] = rng.choice(["Mutt/2.2.9 (2022-11-12)", "Mozilla Thunderbird 115.6.0",
                                      "Evolution 3.46.4-2", "Roundcube Webmail/1.6.5", "Claws Mail 4.1.1"])
    if rng.random() < 0.3:
        m["List-Id"] = f"<{rng.choice(['devel', 'users', 'announce', 'security'])}.lists.example.org>"
    sig = f"\n\n-- \n{fn}\n" if rng.random() < 0.6 else "\n"
    m.set_content(body + sig, cte=rng.choice([None, None, "quoted-printable", "8bit"]))
    if rng.random() < 0.25:
        html = "".join(f"<p>{__import__('html').escape(p)}</p>\n" for p in body.split("\n\n"))
        m.add_alternative(f"<html><body>\n{html}</body></html>\n", subtype="html")
    if files and rng.random() < 0.2:
        name, text = rng.choice(files)
        m.add_attachment(text[:20000].encode(), maintype="text", subtype="plain",
                         filename=os.path.basename(name))
    return m, fa, [t[1] for t in to]


def smtp_traffic(rng, texts, files, budget):
    """SMTP exchanges as on the wire, the same mail as mbox, and a Postfix-style log."""
    paras = _paragraphs(texts, rng, 3000)
    srv = _SMTPServer(("127.0.0.1", 0), _SMTPHandler)
    srv.host, srv.rng, srv.records = "mail.example.org", random.Random(rng.random()), {}
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    import smtplib
    mbox, maillog, sent, prev = [], [], 0, None
    t = 1_704_067_200 + rng.randrange(10 ** 6)
    while sent < budget:
        c = smtplib.SMTP("127.0.0.1", srv.server_address[1], local_hostname=rng.choice(
            ["client.example.com", "laptop.corp.example.com", "relay.example.net", "build01.example.io"]))
        c.ehlo_or_helo_if_needed()
        box = []
        for _ in range(rng.randint(1, 4)):
            m, fa, to = _mail(rng, paras, files, prev)
            if rng.random() < 0.1:
                to = to + [f"olduser{rng.randrange(99)}@{rng.choice(DOMAINS)}"]
            try:
                c.send_message(m, from_addr=fa, to_addrs=to)
            except smtplib.SMTPRecipientsRefused:
                pass
            prev = m
            raw = m.as_bytes(policy=email.policy.SMTP).decode("utf-8", "replace").replace("\r\n", "\n")
            box.append(f"From {fa} {time.strftime('%a %b %d %H:%M:%S %Y', time.gmtime(t))}\n{raw}\n")
            t += rng.randrange(5, 900)
            pid, q = rng.randrange(1000, 60000), "".join(rng.choice("0123456789ABCDEF") for _ in range(10))
            ts = time.strftime("%b %d %H:%M:%S", time.gmtime(t))
            maillog += [f"{ts} mail postfix/smtpd[{pid}]: connect from client.example.com[192.0.2.{rng.randrange(1, 255)}]",
                        f"{ts} mail postfix/smtpd[{pid}]: {q}: client=client.example.com[192.0.2.{rng.randrange(1, 255)}]",
                        f"{ts} mail postfix/cleanup[{pid + 3}]: {q}: message-id={m['Message-ID']}",
                        f"{ts} mail postfix/qmgr[812]: {q}: from=<{fa}>, size={len(raw)}, nrcpt={len(to)} (queue active)"]
            for r in to:
                st = ("bounced (unknown user)" if r.startswith("olduser") else "sent (delivered to mailbox)")
                maillog.append(f"{ts} mail postfix/local[{pid + 7}]: {q}: to=<{r}>, relay=local, delay=0.{rng.randrange(10, 99)}, "
                               f"delays=0.{rng.randrange(1, 9)}/0/0/0.{rng.randrange(1, 9)}, dsn={'5.1.1' if 'olduser' in r else '2.0.0'}, status={st}")
            maillog.append(f"{ts} mail postfix/qmgr[812]: {q}: removed")
            sent += len(raw)
        if rng.random() < 0.2:
            c.noop()
        c.quit()
        mbox.append("".join(box))
    srv.shutdown()
    wire = [b"".join(v).decode("utf-8", "replace") for v in srv.records.values()]
    log = "\n".join(maillog) + "\n"
    return wire, mbox, [log[i:i + 200_000] for i in range(0, len(log), 200_000)]


# -------------------------------------------------------------------------------------- URLs

URL_RE = re.compile(r"""https?://[A-Za-z0-9.-]+(?::\d+)?(?:/[^\s<>"'`)\]}|\\^]*)?""")


def url_lists(rng, docs, budget):
    seen = {}
    for d in docs:
        for u in URL_RE.findall(d):
            u = u.rstrip(".,;:!?*'&")
            if 10 < len(u) < 300 and "example" not in u:
                seen.setdefault(u, None)
    urls = list(seen)
    rng.shuffle(urls)
    out, i, total = [], 0, 0
    while i < len(urls) and total < budget:
        n = rng.randint(20, 400)
        part = urls[i:i + n]; i += n
        k = rng.random()
        if k < 0.5:
            d = "\n".join(part)
        elif k < 0.65:
            d = "\n".join(f"- [{u.split('/')[2]}]({u})" for u in part)
        elif k < 0.8:
            d = "<ul>\n" + "\n".join(f'  <li><a href="{u}">{u.split("/")[-1] or u.split("/")[2]}</a></li>' for u in part) + "\n</ul>"
        elif k < 0.9:
            d = "url,status,bytes\n" + "\n".join(f"{u},{rng.choice([200, 200, 200, 301, 404])},{rng.randrange(200, 200000)}" for u in part)
        else:
            d = json.dumps(part, indent=rng.choice([None, 2]))
        out.append(d + "\n"); total += len(d)
    return out


def generated(rng, prose, served):
    """(description, class, docs) of everything this module makes."""
    files = [(n, t) for n, t in served if len(t) < 30000]
    rw, rlog = redis_traffic(rng, prose, 4_000_000)
    ver = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2] if rw else "-"
    yield f"(redis-server {ver}: RESP exchanges as on the wire, corpus_extra.py)", "protocol", rw
    yield f"(redis-server {ver}: MONITOR feed + verbose server log, corpus_extra.py)", "logs", rlog
    wire, mbox, mlog = smtp_traffic(rng, prose, files, 4_000_000)
    yield "(SMTP: Python smtplib -> ESMTP responder here, MIME mail, as on the wire; corpus_extra.py)", "protocol", wire
    yield "(the same mail as mbox files; corpus_extra.py)", "prose", mbox
    yield "(Postfix-style mail log of those sessions; corpus_extra.py)", "logs", mlog


if __name__ == "__main__":
    texts = [open(f, errors="replace").read() for f in ["/usr/share/common-licenses/GPL-3",
                                                         "/usr/share/common-licenses/Apache-2.0"]]
    r = random.Random(1)
    for what, cls, ds in generated(r, texts * 5, [("x/GPL-3", texts[0][:20000])]):
        print(cls, what, len(ds), sum(map(len, ds)))
    print(url_lists(r, texts, 10000)[:1])
