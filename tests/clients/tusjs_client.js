// Uploads one file to keepsake over tus with tus-js-client (npm, in Node),
// resuming what an earlier run left (its upload URL kept in STORAGE).
//
//   node tusjs_client.js ENDPOINT TOKEN FILE ALBUM STORAGE [DIE_AFTER]
//
// KEEPSAKE_TUS_PROTOCOL picks tus-js-client's protocol: tus-v1 (the
// default), ietf-draft-03 (interop version 5) or ietf-draft-05 (6).
//
// With DIE_AFTER, the process kills itself (SIGKILL) once that many bytes
// of the file are on the server: a client cut off mid-file. Otherwise it
// prints {"name", "outcome", "file_id"} from the final response's headers.
const fs = require("fs");
const path = require("path");
const tus = require("tus-js-client");

const [endpoint, token, file, album, storage, dieAfter] = process.argv.slice(2);
const data = fs.readFileSync(file);
const name = path.basename(file);

const upload = new tus.Upload(data, {
  endpoint,
  protocol: process.env.KEEPSAKE_TUS_PROTOCOL || "tus-v1",
  headers: { Authorization: `Bearer ${token}` },
  chunkSize: 1 << 20,
  metadata: { filename: name, album },
  urlStorage: new tus.FileUrlStorage(storage),
  fingerprint: async () => `keepsake-${name}-${data.length}-${album}`,
  removeFingerprintOnSuccess: true,
  retryDelays: [0, 200, 1000],
  onChunkComplete: (_chunk, accepted) => {
    if (dieAfter !== undefined && accepted >= Number(dieAfter)) {
      process.kill(process.pid, "SIGKILL");
    }
  },
  onError: (e) => {
    console.error(`tus-js-client: ${e}`);
    process.exit(1);
  },
  onSuccess: (payload) => {
    const res = payload && payload.lastResponse;
    const header = (h) => (res ? res.getHeader(h) : undefined) || null;
    console.log(JSON.stringify({ name, outcome: header("Keepsake-Outcome"), file_id: header("Keepsake-File-Id") }));
  },
});

upload.findPreviousUploads().then((previous) => {
  if (previous.length > 0) {
    upload.resumeFromPreviousUpload(previous[0]);
  }
  upload.start();
});
