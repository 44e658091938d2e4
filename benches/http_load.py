"""The HTTP face under load, each figure beside its baseline in the same
run (run through benches/http.sh, which builds keepsake first):

- 1 GiB of 3 MiB photos sent by 16 concurrent clients, a user each
  (connections kept alive, bodies sent with `sendfile`, from one
  process) over loopback, as one-shot `PUT /v1/files` and as tus
  creation-with-upload `POST /v1/uploads`, against `keepsake backup` of the
  same folder; the server's peak resident memory (VmHWM).
- The bulk preflight: 1,000 (name, hash, album) per `POST /v1/check`
  (342 of them the stored photos, the rest unknown), latency of each
  request (p50, p99) and hashes per second, from one client and from two.
- One 2 GiB file over tus (and one-shot): the server's peak memory.

    python3 benches/http_load.py KEEPSAKE_BINARY [ROUNDS]
"""

import asyncio
import base64
import concurrent.futures
import hashlib
import http.client
import json
import os
import random
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

keepsake = sys.argv[1]
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
work = tempfile.mkdtemp(prefix="keepsake-http-", dir=os.environ.get("TMPDIR", "/var/tmp"))
photos = os.path.join(work, "photos")
CLIENTS = 16


def make_photos():
    os.makedirs(photos)
    for i in range(342):
        rng = random.Random(1 * 1_000_003 + i)
        with open(os.path.join(photos, f"IMG_{i:05}.JPG"), "wb") as f:
            f.write(rng.randbytes(3 << 20))
    subprocess.run(["sync"], check=True)


def fresh(name):
    """An empty store path. The store of the run before is removed and the
    removal synced here, outside any timing, so that the file system's
    freeing of its gigabyte is not charged to the next run."""
    store = os.path.join(work, name)
    shutil.rmtree(store, ignore_errors=True)
    subprocess.run(["sync"], check=True)
    return store


def token(store, user="bench"):
    out = subprocess.run(
        [keepsake, "--json", "--store", store, "token", "create", "--user", user],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)["token"]


class Server:
    def __init__(self, store):
        self.proc = subprocess.Popen(
            [keepsake, "--json", "--store", store, "serve", "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE
        )
        told = json.loads(self.proc.stdout.readline())
        self.addr = told["listening"].removeprefix("http://")

    def cpu_s(self):
        """The server's CPU time so far (user + system), in seconds."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def timed(f):
    t0 = time.monotonic()
    f()
    subprocess.run(["sync"], check=True)
    return time.monotonic() - t0


def cpu(who):
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def backup():
    """The backup's time and its CPU time (user + system)."""
    store = fresh("backup-store")
    before = cpu(resource.RUSAGE_CHILDREN)
    seconds = timed(
        lambda: subprocess.run(
            [keepsake, "--store", store, "backup", "--album", "A", photos], check=True, stdout=subprocess.DEVNULL
        )
    )
    return seconds, cpu(resource.RUSAGE_CHILDREN) - before


def one_shot_head(tok, path):
    name = os.path.basename(path)
    return (
        f"PUT /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n"
        f"Keepsake-Album: A\r\nKeepsake-Name: {name}\r\nContent-Length: {os.path.getsize(path)}\r\n\r\n"
    )


def tus_creation(tok, path, with_body):
    name = base64.b64encode(os.path.basename(path).encode()).decode()
    album = base64.b64encode(b"A").decode()
    size = os.path.getsize(path)
    body = f"Content-Type: application/offset+octet-stream\r\nContent-Length: {size}\r\n" if with_body else ""
    return (
        f"POST /v1/uploads HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\nTus-Resumable: 1.0.0\r\n"
        f"Upload-Length: {size}\r\nUpload-Metadata: filename {name},album {album}\r\n{body}\r\n"
    )


def tus_head(tok, path):
    return tus_creation(tok, path, True)


def tus_patch_head(tok, location, path):
    return (
        f"PATCH {location} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\nTus-Resumable: 1.0.0\r\n"
        f"Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n"
        f"Content-Length: {os.path.getsize(path)}\r\n\r\n"
    )


async def answer(reader):
    """The status and headers of the next response, its body read past."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    fields = dict(
        (k.strip().lower(), v.strip()) for k, _, v in (l.decode().partition(":") for l in head.split(b"\r\n")[1:] if l)
    )
    await reader.readexactly(int(fields.get("content-length", 0)))
    assert status in (200, 201, 204), head
    return fields


async def clients(addr, heads, files, tokens):
    """CLIENTS connections (kept alive), each sending its share of `files`
    with `sendfile`, in one process: a client per file as a process of its
    own (curl) spent more of these 2 cores than the server did. Client i
    is user `tokens[i]`'s. `heads` gives a file's request head (from the
    client's token and the file's path); a pair of them is tus's creation (no
    body) and the `PATCH` of the body to the `Location` it answers, as
    tus-js-client and tuspy send by default."""
    host, port = addr.split(":")
    queue = asyncio.Queue()
    for p in files:
        queue.put_nowait(p)

    async def worker(tok):
        reader, writer = await asyncio.open_connection(host, int(port))
        loop = asyncio.get_running_loop()
        while not queue.empty():
            path = queue.get_nowait()
            head = heads(tok, path)
            if isinstance(head, tuple):
                create, patch = head
                writer.write(create.encode())
                head = patch((await answer(reader))["location"])
            writer.write(head.encode())
            with open(path, "rb") as f:
                await loop.sendfile(writer.transport, f)
            await answer(reader)
        writer.close()

    await asyncio.gather(*(worker(tok) for tok in tokens))


def over_http(heads, files):
    """The uploads' time, the server's peak memory, and the CPU time the
    server and the clients spent on them."""
    store = fresh("http-store")
    # A user per client: sixteen phones, as a server sees them (one user
    # holds at most eight bodies at once; the rest of its uploads stream).
    tokens = [token(store, f"phone-{i}") for i in range(CLIENTS)]
    server = Server(store)
    try:
        before = (server.cpu_s(), cpu(resource.RUSAGE_SELF))
        seconds = timed(lambda: asyncio.run(clients(server.addr, heads, files, tokens)))
        spent = (server.cpu_s() - before[0], cpu(resource.RUSAGE_SELF) - before[1])
        return seconds, server.peak_mib(), spent
    finally:
        server.stop()


def curl_one_shot(addr, tok, path):
    name = os.path.basename(path)
    return [
        "curl", "-sS", "--fail", "-o", "/dev/null", "-T", path,
        "-H", f"Authorization: Bearer {tok}", "-H", "Keepsake-Album: A", "-H", f"Keepsake-Name: {name}",
        f"http://{addr}/v1/files",
    ]


def curl_tus(addr, tok, path):
    name = base64.b64encode(os.path.basename(path).encode()).decode()
    album = base64.b64encode(b"A").decode()
    return [
        "curl", "-sS", "--fail", "-o", "/dev/null", "-X", "POST", "-T", path,
        "-H", f"Authorization: Bearer {tok}", "-H", "Tus-Resumable: 1.0.0",
        "-H", f"Upload-Length: {os.path.getsize(path)}",
        "-H", "Content-Type: application/offset+octet-stream",
        "-H", f"Upload-Metadata: filename {name},album {album}",
        f"http://{addr}/v1/uploads",
    ]


def preflight(clients, requests):
    """Latencies (s) of `requests` preflights of 1,000 items from each of
    `clients` connections, over a store holding the photos."""
    store = fresh("check-store")
    subprocess.run([keepsake, "--store", store, "--user", "bench", "backup", "--album", "A", photos],
                   check=True, stdout=subprocess.DEVNULL)
    tok = token(store)
    known = []
    for name in sorted(os.listdir(photos)):
        with open(os.path.join(photos, name), "rb") as f:
            from_b3 = subprocess.run(["b3sum", "--no-names"], stdin=f, capture_output=True, text=True, check=True)
        known.append((name, from_b3.stdout.strip()))
    rng = random.Random(7)
    items = [{"name": n, "hash": h, "album": "A"} for n, h in known]
    items += [{"name": f"new_{i}.jpg", "hash": rng.randbytes(32).hex(), "album": "A"} for i in range(1000 - len(items))]
    body = json.dumps({"items": items}).encode()
    server = Server(store)
    try:
        def one_client(_):
            host, port = server.addr.split(":")
            conn = http.client.HTTPConnection(host, int(port))
            out = []
            for _ in range(requests):
                t0 = time.monotonic()
                conn.request("POST", "/v1/check", body, {"Authorization": f"Bearer {tok}", "Content-Type": "application/json"})
                r = conn.getresponse()
                answer = json.loads(r.read())
                out.append(time.monotonic() - t0)
                assert r.status == 200 and len(answer["items"]) == 1000, r.status
            return out
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            lat = [x for xs in pool.map(one_client, range(clients)) for x in xs]
        wall = time.monotonic() - t0
        return lat, 1000 * len(lat) / wall
    finally:
        server.stop()


def big(command):
    path = os.path.join(work, "video.mp4")
    if not os.path.exists(path):
        with open(path, "wb") as f:
            rng = random.Random(99)
            for _ in range(2048):
                f.write(rng.randbytes(1 << 20))
    store = fresh("big-store")
    tok = token(store)
    server = Server(store)
    try:
        seconds = timed(lambda: subprocess.run(command(server.addr, tok, path), check=True))
        return seconds, server.peak_mib()
    finally:
        server.stop()
        shutil.rmtree(store, ignore_errors=True)


def main():
    make_photos()
    files = sorted(os.path.join(photos, n) for n in os.listdir(photos))
    total = sum(os.path.getsize(p) for p in files) / (1 << 20)
    kinds = {
        "one-shot": lambda tok, p: one_shot_head(tok, p),
        "tus": lambda tok, p: tus_head(tok, p),
        "tus, `POST` then `PATCH`": lambda tok, p: (
            tus_creation(tok, p, False),
            lambda location: tus_patch_head(tok, location, p),
        ),
    }
    rows = {"backup": [], **{k: [] for k in kinds}}
    peaks = {k: [] for k in kinds}
    cpus = {"backup": [], **{k: [] for k in kinds}}
    # A round not counted: the first run after the photos were written was
    # the slow one, whichever side it was (3 s for the backup's 1).
    backup()
    over_http(one_shot_head, files)
    for _ in range(rounds):
        # Alternated, so that a slow minute of the disk falls on every side.
        s, spent = backup()
        rows["backup"].append(s)
        cpus["backup"].append((spent, 0.0))
        for kind, heads in kinds.items():
            s, peak, spent = over_http(heads, files)
            rows[kind].append(s)
            peaks[kind].append(peak)
            cpus[kind].append(spent)
    base = statistics.median(rows["backup"])
    print(f"\n1 GiB of 3 MiB photos ({len(files)} files, {total:.0f} MiB), {CLIENTS} concurrent clients, medians of {rounds}:\n")
    def spent(kind):
        server = statistics.median(c[0] for c in cpus[kind])
        client = statistics.median(c[1] for c in cpus[kind])
        return f"{server:.2f} s | {client:.2f} s" if kind != "backup" else f"{server:.2f} s | "

    print("| how | time | MiB/s | throughput / backup's | CPU: keepsake | CPU: clients | server peak RSS |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| `keepsake backup` | {base:.2f} s | {total / base:.0f} | 1.00 | {spent('backup')} | |")
    for kind in kinds:
        t = statistics.median(rows[kind])
        print(
            f"| {kind} over HTTP | {t:.2f} s | {total / t:.0f} | {base / t:.2f} | {spent(kind)} | {max(peaks[kind]):.0f} MiB |"
        )
    print("\nall runs (s):", json.dumps({k: [round(x, 2) for x in v] for k, v in rows.items()}))

    print("\nbulk preflight, 1,000 items per request (342 stored, 658 unknown):\n")
    print("| clients | requests | p50 | p99 | hashes/s |")
    print("|---:|---:|---:|---:|---:|")
    for clients in (1, 2):
        lat, rate = preflight(clients, 100)
        q = statistics.quantiles(lat, n=100)
        print(f"| {clients} | {len(lat)} | {statistics.median(lat) * 1e3:.1f} ms | {q[98] * 1e3:.1f} ms | {rate:,.0f} |")

    print("\none 2 GiB file:\n")
    print("| how | time | server peak RSS |")
    print("|---|---:|---:|")
    for kind, command in (("tus", curl_tus), ("one-shot", curl_one_shot)):
        s, peak = big(command)
        print(f"| {kind} | {s:.1f} s | {peak:.0f} MiB |")


try:
    main()
finally:
    shutil.rmtree(work, ignore_errors=True)
