"""Uploads one file to keepsake over tus with tuspy (PyPI), resuming what an
earlier run of this script left (its upload URL kept in --storage).

    python3 tuspy_client.py ENDPOINT TOKEN FILE ALBUM STORAGE [DIE_AFTER]

With DIE_AFTER, the process kills itself (SIGKILL) once that many bytes of
the file are on the server: a client cut off mid-file. Otherwise it prints
{"name", "outcome", "file_id"} from the final response's headers.
"""

import json
import os
import signal
import sys

from tusclient import client
from tusclient.storage import filestorage

endpoint, token, path, album, storage = sys.argv[1:6]
die_after = int(sys.argv[6]) if len(sys.argv) > 6 else None

tus = client.TusClient(endpoint, headers={"Authorization": f"Bearer {token}"})
uploader = tus.uploader(
    file_path=path,
    chunk_size=1 << 20,
    metadata={"filename": os.path.basename(path), "album": album},
    store_url=True,
    url_storage=filestorage.FileStorage(storage),
)
if die_after is not None:
    uploader.upload(stop_at=die_after)
    os.kill(os.getpid(), signal.SIGKILL)
uploader.upload()
headers = uploader.request.response_headers if uploader.request else {}
print(
    json.dumps(
        {
            "name": os.path.basename(path),
            "outcome": headers.get("keepsake-outcome"),
            "file_id": headers.get("keepsake-file-id"),
        }
    ),
    flush=True,
)
