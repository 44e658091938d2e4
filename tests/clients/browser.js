// The upload page in headless Chromium (Debian's), driven by
// puppeteer-core: a folder is chosen in the page's folder picker three
// times, and every file must show `stored` the first time, `skipped` when
// the same folder goes to the same album again, and `linked` into another
// album; the page's usage must count each content once, and the stored
// files must be the folder's bytes.
//
//     node tests/clients/browser.js KEEPSAKE_BINARY [CHROMIUM]
"use strict";

const { spawn, execFileSync } = require("node:child_process");
const crypto = require("node:crypto");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const readline = require("node:readline");
const puppeteer = require("puppeteer-core");

const [keepsake, chromium = "/usr/bin/chromium"] = process.argv.slice(2);

function fail(why) {
  console.error(`browser: FAILED: ${why}`);
  process.exit(1);
}

function folder(root) {
  const dir = path.join(root, "Camera");
  fs.mkdirSync(path.join(dir, "2024"), { recursive: true });
  const files = {
    "a.jpg": crypto.randomBytes(300_000),
    "b.jpg": crypto.randomBytes(5_000_000),
    "2024/c.heic": crypto.randomBytes(70_000),
    "tiny.txt": Buffer.from("hello"),
  };
  // The same content as a.jpg under another name: stored too (the desktop
  // rule wants the same name), but charged once.
  files["2024/a-copy.jpg"] = files["a.jpg"];
  for (const [name, bytes] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), bytes);
  return { dir, files };
}

async function serve(store) {
  const proc = spawn(keepsake, ["--json", "--store", store, "serve", "--listen", "127.0.0.1:0"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const line = await new Promise((ok) => readline.createInterface({ input: proc.stdout }).once("line", ok));
  return { proc, url: JSON.parse(line).listening };
}

async function drop(page, dir, album) {
  await page.$eval("#album", (el, v) => (el.value = v), album);
  const input = await page.$("#folder");
  // Chromium takes a folder's path for a `webkitdirectory` input, as a user
  // choosing it in the picker gives it.
  await input.uploadFile(dir);
  await page.waitForFunction(() => document.getElementById("summary").dataset.done === "true", { timeout: 60_000 });
  return page.$$eval("#list li", (lis) => lis.map((li) => [li.dataset.name, li.dataset.outcome]));
}

async function main() {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "keepsake-browser-"));
  const store = path.join(root, "store");
  const token = JSON.parse(
    execFileSync(keepsake, ["--json", "--store", store, "token", "create", "--user", "ann"], { encoding: "utf8" }),
  ).token;
  const { dir, files } = folder(root);
  const server = await serve(store);
  const browser = await puppeteer.launch({
    executablePath: chromium,
    headless: true,
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
  try {
    const page = await browser.newPage();
    page.on("pageerror", (e) => fail(`the page threw: ${e.message}`));
    await page.goto(server.url + "/", { waitUntil: "load" });
    await page.type("#token", token);
    const names = Object.keys(files).map((n) => "Camera/" + n).sort();
    const expect = async (album, outcome) => {
      const rows = (await drop(page, dir, album)).sort();
      const got = JSON.stringify(rows);
      const want = JSON.stringify(names.map((n) => [n, outcome]));
      if (got !== want) fail(`into ${album}: ${got}, not ${want}`);
      console.log(`browser: ${rows.length} files into ${album}: all ${outcome}`);
    };
    await expect("Trip", "stored");
    await expect("Trip", "skipped");
    await expect("Elsewhere", "linked");
    const unique = new Set(Object.values(files).map((b) => b.toString("base64")));
    const uniqueBytes = [...unique].reduce((n, b) => n + Buffer.from(b, "base64").length, 0);
    const shown = await page.$eval("#usage", (el) => Number(el.dataset.uniqueBytes));
    if (shown !== uniqueBytes) fail(`the page shows ${shown} unique bytes, not ${uniqueBytes}`);
    // The stored bytes are the folder's.
    const auth = { Authorization: `Bearer ${token}` };
    const listed = await (await fetch(`${server.url}/v1/files?album=Trip`, { headers: auth })).json();
    for (const f of listed.files) {
      const name = Object.keys(files).find((n) => path.basename(n) === f.name);
      const got = Buffer.from(await (await fetch(`${server.url}/v1/files/${f.file_id}/content`, { headers: auth })).arrayBuffer());
      if (!name || !got.equals(files[name])) fail(`${f.name} came back different`);
    }
    console.log(`browser: usage ${shown} bytes for ${names.length} files; every file byte-identical`);
  } finally {
    await browser.close();
    server.proc.kill("SIGKILL");
    fs.rmSync(root, { recursive: true, force: true });
  }
}

main().catch((e) => fail(e.stack || e));
