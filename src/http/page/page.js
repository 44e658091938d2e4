// The upload page: files go up one at a time over tus (tus-js-client) to
// POST /v1/uploads; the last response of each names its outcome
// (Keepsake-Outcome: stored, linked or skipped), shown beside the file.
// The token stays in this tab's sessionStorage only.
"use strict";

const $ = (id) => document.getElementById(id);
const token = $("token");
token.value = sessionStorage.getItem("keepsake-token") || "";
token.addEventListener("change", () => sessionStorage.setItem("keepsake-token", token.value.trim()));

const auth = () => ({ Authorization: "Bearer " + token.value.trim() });

function row(name) {
  const li = document.createElement("li");
  li.dataset.name = name;
  li.dataset.outcome = "waiting";
  const n = document.createElement("span");
  n.textContent = name;
  const o = document.createElement("span");
  o.className = "outcome";
  o.textContent = "waiting";
  li.append(n, o);
  $("list").append(li);
  return (outcome, text) => {
    li.dataset.outcome = outcome;
    o.textContent = text || outcome;
  };
}

function upload(file, show) {
  return new Promise((resolve) => {
    let outcome = null;
    const up = new tus.Upload(file, {
      endpoint: "v1/uploads",
      headers: auth(),
      metadata: { filename: file.name, album: $("album").value, mode: $("mode").value },
      chunkSize: 8 * 1024 * 1024,
      retryDelays: [0, 1000, 3000, 5000],
      // A new upload each time: the server's duplicate rules, not the
      // browser's memory, decide what a re-drop needs.
      storeFingerprintForResuming: false,
      onProgress: (sent, total) => show("uploading", Math.floor((100 * sent) / Math.max(total, 1)) + " %"),
      onAfterResponse: (_req, res) => {
        const o = res.getHeader("Keepsake-Outcome");
        if (o) outcome = o;
      },
      onSuccess: () => {
        show(outcome || "stored");
        resolve(outcome || "stored");
      },
      onError: (err) => {
        const body = err.originalResponse ? err.originalResponse.getBody() : "";
        let detail = String(err.message || err);
        try {
          detail = JSON.parse(body).detail || detail;
        } catch (_) {}
        show("error", "error: " + detail);
        resolve("error");
      },
    });
    up.start();
  });
}

async function showUsage() {
  const res = await fetch("v1/usage", { headers: auth() });
  if (!res.ok) return;
  const u = await res.json();
  const mib = (b) => (b / 1048576).toFixed(1) + " MiB";
  $("usage").textContent =
    `${u.files} files, ${mib(u.unique_bytes)} stored (${mib(u.logical_bytes)} as files: ` +
    `${mib(u.logical_bytes - u.unique_bytes)} saved by deduplication)`;
  $("usage").dataset.uniqueBytes = u.unique_bytes;
  $("usage").dataset.files = u.files;
}

async function send(files) {
  if (!token.value.trim()) {
    $("summary").textContent = "Enter a token first (keepsake token create --user NAME).";
    return;
  }
  sessionStorage.setItem("keepsake-token", token.value.trim());
  $("list").replaceChildren();
  $("summary").dataset.done = "false";
  const counts = {};
  const work = files.map((f) => [f, row(f.webkitRelativePath || f.name)]);
  for (const [file, show] of work) {
    const o = await upload(file, show);
    counts[o] = (counts[o] || 0) + 1;
  }
  $("summary").textContent = Object.entries(counts)
    .map(([k, v]) => `${v} ${k}`)
    .join(", ");
  await showUsage();
  $("summary").dataset.done = "true";
}

// Every file under a dropped folder (or the dropped files themselves).
async function entries(items) {
  const out = [];
  const walk = async (entry) => {
    if (entry.isFile) {
      out.push(await new Promise((ok, fail) => entry.file(ok, fail)));
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((ok, fail) => reader.readEntries(ok, fail));
        if (batch.length === 0) break;
        for (const e of batch) await walk(e);
      }
    }
  };
  for (const e of items.map((i) => i.webkitGetAsEntry()).filter(Boolean)) await walk(e);
  return out;
}

const drop = $("drop");
drop.addEventListener("dragover", (e) => {
  e.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", async (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  send(await entries([...e.dataTransfer.items]));
});
for (const id of ["folder", "files"]) {
  $(id).addEventListener("change", (e) => {
    send([...e.target.files]);
    e.target.value = "";
  });
}
if (token.value) showUsage();
