#!/usr/bin/env python3
"""Many concurrent connections through one link, and memory per idle connection.

Starts a receiver and a sender (separate `llmpack` processes, stream mode,
`max_connections` raised), an echo server, then per round opens N client
connections through the tunnel at once. Each sends 1 KiB and waits for its
echo, checked byte for byte; all N then stay open and idle while the
proxies' resident memory (VmRSS) is read, and are closed. It prints, per
round, how many were served and how long it took, and each end's RSS
before, with all N open, and after they closed. The allocator keeps freed
memory, so the first round (from a fresh process) gives the memory an idle
connection costs; later rounds show what reuse adds.

Usage: scripts/bench-connections.py [--llmpack PATH] [--conns 2000] [--rounds 5]
(`scripts/setup.sh` and a release build first; runs on loopback, no root.)
"""
import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time


def free_port(kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def active(port):
    """The proxy's llmpack_active_connections, summed over tunnels."""
    import urllib.request
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return -1
    return sum(float(l.split()[-1]) for l in text.splitlines()
               if l.startswith("llmpack_active_connections"))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def echo(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def client(port, i, opened, release):
    payload = (f"client {i:05d} ".encode() * 80)[:1024]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    got = await reader.readexactly(len(payload))
    ok = got == payload
    opened.append(ok)
    await release.wait()
    writer.close()
    try:
        await writer.wait_closed()
    except ConnectionError:
        pass
    return ok


async def round_(port, n, pids, timeout):
    before = {k: rss_kib(p) for k, p in pids.items()}
    opened = []
    release = asyncio.Event()
    t0 = time.monotonic()
    tasks = [asyncio.create_task(client(port, i, opened, release)) for i in range(n)]
    while len(opened) < n and time.monotonic() - t0 < timeout:
        await asyncio.sleep(0.05)
    took = time.monotonic() - t0
    await asyncio.sleep(1.0)  # idle: every connection open, nothing moving
    during = {k: rss_kib(p) for k, p in pids.items()}
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    served = sum(1 for r in results if r is True)
    await asyncio.sleep(1.0)
    after = {k: rss_kib(p) for k, p in pids.items()}
    return served, took, before, during, after


async def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(here)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(repo, "target"))
    ap.add_argument("--llmpack", default=os.path.join(target, "release", "llmpack"))
    ap.add_argument("--conns", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--pause", type=float, default=1.0, help="seconds between rounds")
    a = ap.parse_args()

    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 4 * a.conns + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    d = tempfile.mkdtemp(prefix="llmpack-conns-")
    subprocess.run([a.llmpack, "keygen", "--out", d], check=True, stdout=subprocess.DEVNULL)
    echo_srv = await asyncio.start_server(echo, "127.0.0.1", 0, backlog=4096)
    echo_port = echo_srv.sockets[0].getsockname()[1]
    link = free_port(socket.SOCK_DGRAM)
    listen = free_port()
    limits = f"[limits]\nmax_connections = {a.conns + 100}\n"
    mports = {"sender": free_port(), "receiver": free_port()}
    with open(os.path.join(d, "r.toml"), "w") as f:
        f.write(f'role = "receiver"\n[link]\nlisten = "127.0.0.1:{link}"\n'
                'certificate = "receiver.crt"\nkey = "receiver.key"\npeer_certificate = "sender.crt"\n'
                f'[metrics]\nlisten = "127.0.0.1:{mports["receiver"]}"\n'
                f'{limits}[[tunnel]]\nname = "echo"\ntarget = "127.0.0.1:{echo_port}"\ncodec = "zstd"\n')
    with open(os.path.join(d, "s.toml"), "w") as f:
        f.write(f'role = "sender"\n[link]\nconnect = "127.0.0.1:{link}"\n'
                'certificate = "sender.crt"\nkey = "sender.key"\npeer_certificate = "receiver.crt"\n'
                f'[metrics]\nlisten = "127.0.0.1:{mports["sender"]}"\n'
                f'{limits}[[tunnel]]\nname = "echo"\nlisten = "127.0.0.1:{listen}"\ncodec = "zstd"\n')
    log = open(os.path.join(d, "proxies.log"), "w")
    recv = subprocess.Popen([a.llmpack, "receiver", "--config", os.path.join(d, "r.toml")],
                            stdout=log, stderr=log, preexec_fn=lambda: resource.setrlimit(
                                resource.RLIMIT_NOFILE, (want, hard)))
    await asyncio.sleep(0.5)
    send = subprocess.Popen([a.llmpack, "sender", "--config", os.path.join(d, "s.toml")],
                            stdout=log, stderr=log, preexec_fn=lambda: resource.setrlimit(
                                resource.RLIMIT_NOFILE, (want, hard)))
    await asyncio.sleep(1.5)
    pids = {"sender": send.pid, "receiver": recv.pid}
    failed = False
    print(f"{a.conns} concurrent echo connections x {a.rounds} rounds (stream mode, zstd)")
    try:
        for r in range(1, a.rounds + 1):
            served, took, before, during, after = await round_(listen, a.conns, pids, a.timeout)
            per = {k: (during[k] - before[k]) / a.conns for k in pids}
            print(f"round {r}: {served}/{a.conns} served, all open after {took:.2f} s; "
                  f"RSS growth per open connection: sender {per['sender']:.1f} KiB, "
                  f"receiver {per['receiver']:.1f} KiB; RSS before/open/after (MiB): "
                  f"sender {before['sender']//1024}/{during['sender']//1024}/{after['sender']//1024}, "
                  f"receiver {before['receiver']//1024}/{during['receiver']//1024}/{after['receiver']//1024}")
            print(f"  open connections after the round: sender {active(mports['sender']):.0f}, "
                  f"receiver {active(mports['receiver']):.0f}")
            failed |= served != a.conns
            await asyncio.sleep(a.pause)
    finally:
        send.terminate()
        recv.terminate()
        send.wait()
        recv.wait()
        echo_srv.close()
    print(f"proxy logs: {os.path.join(d, 'proxies.log')}")
    sys.exit(1 if failed else 0)


asyncio.run(main())
