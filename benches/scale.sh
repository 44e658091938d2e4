#!/usr/bin/env bash
# How keepsake's per-file costs grow with the library: the same operations
# on trees of 8 KiB files at several sizes, each beside its physical limit
# in the same run, and the table between the markers in BENCHMARKS.md.
#
#   benches/scale.sh                                  # 10,000 and 100,000 files
#   KEEPSAKE_SCALE_FILES="10000 100000 1000000" benches/scale.sh
#   KEEPSAKE_SCALE_RUNS=1 benches/scale.sh            # runs per row (default 3)
#
# The trees (1,000 files per folder, unique pseudo-random bytes, dated an
# hour back so that no file is "just written") are generated once under
# $KEEPSAKE_SCALE_DATA (default /var/tmp/keepsake-scale) and reused: a
# million files take 8 GB and a minute and a half to write.
#
# Rows, per size:
#   first    backup into an empty store      beside cp -r + sync
#   rerun    the same tree again, unchanged  beside find (the metadata walk), b3sum
#   rehash   the same with --rehash          beside b3sum
#   link     the tree into a second album    (files/s: no bytes are written)
#   add      every file to a second album, ids on stdin, one command (files/s)
#   usage    keepsake usage                  beside usage on an empty store
#   verify   verify, verify --scrub          beside reading meta/ and segments/ once
#   delete   delete of half the files, ids on stdin, one command (one run: it is
#            destructive)
# and the metadata's bytes per file once the store is closed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs="${KEEPSAKE_SCALE_RUNS:-3}"
sizes="${KEEPSAKE_SCALE_FILES:-10000 100000}"
data="${KEEPSAKE_SCALE_DATA:-/var/tmp/keepsake-scale}"

# shellcheck source=benches/measure.sh
source "$root/benches/measure.sh"
prepare

mkdir -p "$data"
work="$(mktemp -d "$data/run.XXXXXX")"
trap 'rm -rf "$work"' EXIT
results="$work/results"
: >"$results"

# peak_anon SCENARIO TOOL COMMAND: runs COMMAND once and records its peak
# anonymous memory (RssAnon, polled every 5 ms), which, unlike the peak RSS
# /usr/bin/time gives, leaves out the page cache of memory-mapped segments:
# what a scrub reads is mapped, and counted in its RSS.
peak_anon() {
    local kib
    kib=$(python3 - "$3" <<'PY'
import subprocess, sys, time
p = subprocess.Popen(["bash", "-c", sys.argv[1]], stdout=subprocess.DEVNULL)
def anon(pid):
    # The shell's child is keepsake itself.
    try:
        pids = [pid] + [int(k) for k in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return 0
    best = 0
    for q in pids:
        try:
            for line in open(f"/proc/{q}/status"):
                if line.startswith("RssAnon:"):
                    best = max(best, int(line.split()[1]))
        except OSError:
            pass
    return best
peak = 0
while p.poll() is None:
    peak = max(peak, anon(p.pid))
    time.sleep(0.005)
print(peak)
PY
)
    echo "$1 $2-anon 0 $kib 0" >>"$results"
    printf '%-7s %-18s peak anonymous %7d KiB\n' "$1" "$2" "$kib" >&2
}

measure harness "empty command" ":" ":"
"$ks" --store "$work/empty" album create A >/dev/null

for n in $sizes; do
    tree="$data/t$n"
    if [ ! -e "$tree/.complete" ]; then
        echo "== generating $n files in $tree" >&2
        rm -rf "$tree"
        python3 - "$tree" "$n" <<'EOF'
import os, random, sys, time
root, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(n)
hour_ago = time.time() - 3600
for i in range(n):
    folder = os.path.join(root, f"{i // 1000:04}")
    if i % 1000 == 0:
        os.makedirs(folder)
    path = os.path.join(folder, f"IMG_{i:07}.JPG")
    with open(path, "wb") as f:
        f.write(i.to_bytes(8, "little") + rng.randbytes(8184))
    os.utime(path, (hour_ago, hour_ago))
open(os.path.join(root, ".complete"), "w").close()
EOF
        sync
    fi
    store="$work/s$n"
    every="find $tree -type f -name '*.JPG'"
    measure "first-$n" "cp -r + sync" "rm -rf $work/cp" "cp -r $tree $work/cp"
    rm -rf "$work/cp"
    measure "first-$n" "keepsake" "rm -rf $store" "$ks --store $store backup $tree --album A"
    measure "rerun-$n" "find" ":" "find $tree -type f -printf '%s %T@ %C@ %i\n'"
    measure "rerun-$n" "b3sum" ":" "$every -print0 | xargs -0 b3sum"
    measure "rerun-$n" "keepsake" ":" "$ks --store $store backup $tree --album A"
    measure "rehash-$n" "b3sum" ":" "$every -print0 | xargs -0 b3sum"
    measure "rehash-$n" "keepsake" ":" "$ks --store $store backup --rehash $tree --album A"
    measure "link-$n" "keepsake" ":" "$ks --store $store backup $tree --album B\$RANDOM\$RANDOM"
    seq 1 "$n" >"$work/ids"
    measure "add-$n" "keepsake" "echo C\$RANDOM\$RANDOM >$work/album && $ks --store $store album create \$(cat $work/album) >/dev/null" \
        "$ks --store $store add --stdin --album \$(cat $work/album) <$work/ids"
    measure "usage-$n" "empty store" ":" "$ks --store $work/empty usage"
    measure "usage-$n" "keepsake" ":" "$ks --store $store usage"
    measure "verify-$n" "read once" ":" "cat $store/meta/* $store/segments/* >/dev/null"
    measure "verify-$n" "keepsake" ":" "$ks --store $store verify"
    measure "verify-$n" "keepsake --scrub" ":" "$ks --store $store verify --scrub"
    peak_anon "verify-$n" "keepsake" "$ks --store $store verify"
    peak_anon "verify-$n" "keepsake --scrub" "$ks --store $store verify --scrub"
    meta=$(du -sb "$store/meta" | cut -f1)
    echo "meta-$n bytes $((meta / n)) 0 0" >>"$results"
    half=$((n / 2))
    seq 1 "$half" >"$work/ids"
    runs_before=$runs
    runs=1
    measure "delete-$n" "keepsake" ":" "$ks --store $store delete --stdin <$work/ids"
    runs=$runs_before
    rm -rf "$store"
done

echo "== results" >&2
cat "$results" >&2
commit=$(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)
python3 - "$results" "$root/BENCHMARKS.md" "$runs" "$sizes" "$commit" <<'EOF'
import os, platform, sys
results, doc, runs, sizes, commit = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].split(), sys.argv[5]
rows = {}
for line in open(results):
    parts = line.split()
    # "SCENARIO TOOL... MEDIAN RSS RUN..." with the tool's name possibly
    # holding spaces: the numbers are the last fields.
    scenario = parts[0]
    nums = []
    while parts and parts[-1].isdigit():
        nums.insert(0, int(parts.pop()))
    tool = " ".join(parts[1:])
    rows[(scenario, tool)] = (nums[0], nums[1], nums[2:])
harness = rows.pop(("harness", "empty command"))[0]
def t(s, tool):
    return rows[(s, tool)][0]
def ms(v):
    return f"{v / 1000:.2f} s" if v >= 1000 else f"{v} ms"
def rate(n, v):
    return f"{n * 1000 / max(v - harness, 1):,.0f} files/s"
out = []
head = "| operation | " + " | ".join(f"{int(n):,} files" for n in sizes) + " |"
out += [head, "|---|" + "---:|" * len(sizes)]
def row(label, cell):
    out.append(f"| {label} | " + " | ".join(cell(n) for n in sizes) + " |")
row("first backup", lambda n: f"{ms(t(f'first-{n}', 'keepsake'))} ({t(f'first-{n}', 'keepsake') / t(f'first-{n}', 'cp -r + sync'):.2f} x cp -r + sync)")
row("re-run, nothing changed", lambda n: f"{ms(t(f'rerun-{n}', 'keepsake'))} ({t(f'rerun-{n}', 'keepsake') / t(f'rerun-{n}', 'find'):.1f} x find, {t(f'rerun-{n}', 'keepsake') / t(f'rerun-{n}', 'b3sum'):.2f} x b3sum)")
row("`--rehash` re-run", lambda n: f"{ms(t(f'rehash-{n}', 'keepsake'))} ({t(f'rehash-{n}', 'keepsake') / t(f'rehash-{n}', 'b3sum'):.2f} x b3sum)")
row("backup into a second album (all linked)", lambda n: f"{ms(t(f'link-{n}', 'keepsake'))} ({rate(int(n), t(f'link-{n}', 'keepsake'))})")
row("`add` of every file to a second album, ids on stdin, one command", lambda n: f"{ms(t(f'add-{n}', 'keepsake'))} ({rate(int(n), t(f'add-{n}', 'keepsake'))})")
row("delete of half the files, one command", lambda n: f"{ms(t(f'delete-{n}', 'keepsake'))} ({rate(int(n) // 2, t(f'delete-{n}', 'keepsake'))})")
row("`usage`", lambda n: f"{ms(t(f'usage-{n}', 'keepsake'))} ({t(f'usage-{n}', 'keepsake') / t(f'usage-{n}', 'empty store'):.1f} x an empty store)")
row("`verify`", lambda n: f"{ms(t(f'verify-{n}', 'keepsake'))} ({t(f'verify-{n}', 'keepsake') / t(f'verify-{n}', 'read once'):.1f} x reading once), {rows[(f'verify-{n}', 'keepsake')][1] // 1024} MiB peak RSS")
row("`verify --scrub`", lambda n: f"{ms(t(f'verify-{n}', 'keepsake --scrub'))} ({t(f'verify-{n}', 'keepsake --scrub') / t(f'verify-{n}', 'read once'):.1f} x reading once), {rows[(f'verify-{n}', 'keepsake --scrub')][1] // 1024} MiB peak RSS")
row("`verify`, `verify --scrub`: peak anonymous memory", lambda n: f"{rows[(f'verify-{n}', 'keepsake-anon')][1] // 1024} MiB, {rows[(f'verify-{n}', 'keepsake --scrub-anon')][1] // 1024} MiB")
row("metadata bytes per file", lambda n: f"{t(f'meta-{n}', 'bytes')}")
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
per_row = "1 run per row" if runs == 1 else f"{runs} runs per row, median"
text = (f"Measured by `benches/scale.sh` at `{commit}` ({per_row}; delete one run), "
        f"on {os.cpu_count()} cores ({cpu}), Linux {platform.release()}. "
        f"Every time includes the harness's {harness} ms and a `sync`; "
        "ratios are against the limit measured in the same run.\n\n" + "\n".join(out) + "\n")
s = open(doc).read()
begin, end = "<!-- scale:begin -->\n", "<!-- scale:end -->"
if begin in s:
    s = s[: s.index(begin) + len(begin)] + text + s[s.index(end):]
else:
    s += "\n## At scale: `benches/scale.sh`\n\n" + begin + text + end + "\n"
open(doc, "w").write(s)
EOF
echo "BENCHMARKS.md updated" >&2
