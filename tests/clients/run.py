"""Real tus clients against `keepsake serve`: tuspy (PyPI) and
tus-js-client (npm, in Node) each upload a folder, are cut off mid-file
(the client killed; separately, the server killed with SIGKILL and
restarted on the same port), resume, and must end with byte-identical
files, the right outcomes (a second run of the folder: all skipped;
another album: all linked) and a usage that counts each content once.

    python3 tests/clients/run.py KEEPSAKE_BINARY CLIENT...

CLIENT is `tuspy`, `tusjs`, `tusjs-ietf-draft-03` or `tusjs-ietf-draft-05`
(tus-js-client speaking the IETF draft, interop versions 5 and 6). Exits non-zero, saying why, on any failure.
"""

import hashlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
keepsake, clients = sys.argv[1], sys.argv[2:]
TUSPY = [sys.executable, os.path.join(HERE, "tuspy_client.py")]
TUSJS = ["node", os.path.join(HERE, "tusjs_client.js")]
# Each client: its command and the protocol it speaks (tus-js-client's
# two IETF-draft protocols send interop versions 5 and 6).
COMMANDS = {
    "tuspy": (TUSPY, None),
    "tusjs": (TUSJS, "tus-v1"),
    "tusjs-ietf-draft-03": (TUSJS, "ietf-draft-03"),
    "tusjs-ietf-draft-05": (TUSJS, "ietf-draft-05"),
}
BIG = 6 << 20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, store):
        self.store, self.port, self.proc = store, free_port(), None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            [keepsake, "--json", "--store", self.store, "serve", "--listen", f"127.0.0.1:{self.port}"],
            stdout=subprocess.PIPE,
        )
        line = self.proc.stdout.readline()
        assert b"listening" in line, line

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"


def get(server, token, path):
    req = urllib.request.Request(server.url(path), headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req) as r:
        return r.read()


def sessions(store):
    """The user's open upload sessions, as `keepsake uploads` lists them
    (the server stopped: the command opens the store)."""
    out = subprocess.run(
        [keepsake, "--json", "--store", store, "--user", "ann", "uploads"], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def upload(client, server, token, path, album, storage, die_after=None):
    """One client run; its printed outcome, or None when it was killed."""
    command, proto = COMMANDS[client]
    cmd = command + [server.url("/v1/uploads"), token, path, album, storage]
    if die_after is not None:
        cmd.append(str(die_after))
    env = dict(os.environ, KEEPSAKE_TUS_PROTOCOL=proto or "")
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE, env=env)
    if die_after is not None:
        assert run.returncode == -9, f"{client} was to be killed: {run.returncode} {run.stderr}"
        return None
    assert run.returncode == 0, f"{client} failed: {run.stderr}"
    return json.loads(run.stdout.strip().splitlines()[-1])


def check(client):
    work = tempfile.mkdtemp(prefix=f"keepsake-{client}-")
    store, folder = os.path.join(work, "store"), os.path.join(work, "photos")
    os.makedirs(folder)
    rng = random.Random(client)
    sizes = {"IMG_0001.JPG": 300_000, "IMG_0002.JPG": 450_000, "VID_0003.MP4": BIG, "IMG_0004.JPG": 1}
    for name, size in sizes.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(rng.randbytes(size))
    token = subprocess.run(
        [keepsake, "--store", store, "token", "create", "--user", "ann"], capture_output=True, text=True, check=True
    ).stdout.strip()
    server = Server(store)
    storage = os.path.join(work, f"{client}-urls.json")
    video = os.path.join(folder, "VID_0003.MP4")
    try:
        # The client is killed mid-file; the next run resumes it.
        upload(client, server, token, video, "Camera", storage, die_after=2 << 20)
        # The server is killed (SIGKILL) mid-file and restarted; the
        # client resumes from the offset that survived.
        server.kill()
        left = sessions(store)
        assert len(left) == 1 and 2 << 20 <= left[0]["offset"] < BIG, left
        server.start()
        first = {}
        for name in sorted(sizes):
            out = upload(client, server, token, os.path.join(folder, name), "Camera", storage)
            first[name] = out
        assert all(o["outcome"] == "stored" for o in first.values()), first
        for name, out in first.items():
            got = get(server, token, f"/v1/files/{out['file_id']}/content")
            with open(os.path.join(folder, name), "rb") as f:
                assert hashlib.sha256(got).digest() == hashlib.sha256(f.read()).digest(), name
        # The whole folder again, from a client that remembers nothing:
        # every file skipped; into another album: every file linked.
        for album, expected in (("Camera", "skipped"), ("Trip", "linked")):
            fresh = os.path.join(work, f"{client}-{album}-urls.json")
            for name in sorted(sizes):
                out = upload(client, server, token, os.path.join(folder, name), album, fresh)
                assert out["outcome"] == expected, (album, out)
                assert out["file_id"] == first[name]["file_id"], (album, out)
        usage = json.loads(get(server, token, "/v1/usage"))
        assert usage["unique_bytes"] == sum(sizes.values()), usage
        assert usage["files"] == len(sizes), usage
    finally:
        server.kill()
    # The session cut off twice was resumed and finished, not abandoned
    # for a new one.
    assert sessions(store) == [], sessions(store)
    print(f"{client}: killed client and killed server resumed; stored, skipped, linked; usage exact")


for c in clients:
    check(c)
