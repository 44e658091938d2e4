#!/usr/bin/env bash
# Times keepsake side by side with the physical limits and with the tools a
# user would otherwise pick for deduplicated storage of a photo folder, on
# one generated data set, in one run, and writes the table between the
# markers in BENCHMARKS.md.
#
#   benches/compare.sh                         # 3 runs per measurement
#   KEEPSAKE_COMPARE_RUNS=5 benches/compare.sh
#   KEEPSAKE_COMPARE_ONLY="photos" benches/compare.sh   # a subset of scenarios
#
# Scenarios (deterministic pseudo-random bytes, nothing compresses):
#   photos   342 files of 3 MiB (1 GiB): first backup into an empty repository
#   rerun    the same folder again into the same repository
#   album    the same folder into a second album (keepsake only: links)
#   thumbs   20,000 files of 16 KiB
#   big      one 2 GiB file (peak resident memory reported too)
#
# Every timed command is followed by `sync` inside the timing, so every tool
# is measured to durability, whatever it does itself. Inputs are read from
# the page cache (they were just written, and an unprivileged container
# cannot drop caches): the hashing limit is b3sum over cached files.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs="${KEEPSAKE_COMPARE_RUNS:-3}"
only="${KEEPSAKE_COMPARE_ONLY:-photos rerun album thumbs big}"

# shellcheck source=benches/measure.sh
source "$root/benches/measure.sh"
prepare restic=restic borg=borgbackup git-annex=git-annex

work="$(mktemp -d "${TMPDIR:-/var/tmp}/keepsake-compare.XXXXXX")"
trap 'rm -rf "$work"' EXIT
data="$work/data"
results="$work/results"
: >"$results"
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR="$work/restic-cache"
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_BASE_DIR="$work/borg-home"
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@localhost
export GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@localhost

echo "== generating data in $data" >&2
python3 - "$data" <<'EOF'
import os, random, sys
root = sys.argv[1]
def make(folder, count, size, seed):
    os.makedirs(os.path.join(root, folder))
    for i in range(count):
        rng = random.Random(seed * 1_000_003 + i)
        with open(os.path.join(root, folder, f"IMG_{i:05}.JPG"), "wb") as f:
            left = size
            while left:
                n = min(left, 8 << 20)
                f.write(rng.randbytes(n))
                left -= n
make("photos", 342, 3 << 20, 1)
make("thumbs", 20_000, 16 << 10, 2)
make("big", 1, 2 << 30, 3)
EOF
sync

wants() { [[ " $only " == *" $1 "* ]]; }

# What the harness itself costs (bash, /usr/bin/time, sync): it is in every
# row, and matters only beside the shortest ones.
measure harness "empty command" ":" ":"

for set in photos thumbs big; do
    case "$set" in
    photos) wants photos || wants rerun || wants album || continue ;;
    *) wants "$set" || continue ;;
    esac
    src="$data/$set"
    first="$set"
    [ "$set" = photos ] && ! wants photos && first=""
    ks_store="$work/ks"
    if [ -n "$first" ]; then
        measure "$first" "cp -r + sync" "rm -rf $work/cp" "cp -r $src $work/cp"
        rm -rf "$work/cp"
        measure "$first" "b3sum" ":" "b3sum $src/* >/dev/null"
    fi
    if [ -n "$first" ]; then
        measure "$first" "keepsake" "rm -rf $ks_store" "$ks --store $ks_store backup $src --album A"
    else
        rm -rf "$ks_store" && "$ks" --store "$ks_store" backup "$src" --album A >/dev/null
    fi
    if [ "$set" = photos ]; then
        if wants rerun; then
            measure rerun "b3sum" ":" "b3sum $src/* >/dev/null"
            measure rerun "keepsake" ":" "$ks --store $ks_store backup $src --album A"
            measure rerun "keepsake --rehash" ":" "$ks --store $ks_store backup --rehash $src --album A"
        fi
        if wants album; then
            measure album "b3sum" ":" "b3sum $src/* >/dev/null"
            measure album "keepsake" ":" "$ks --store $ks_store backup $src --album B\$RANDOM"
        fi
    fi
    rm -rf "$ks_store"
    [ "$set" = big ] && continue # the peers' big-file times add nothing the photos do not show

    if [ -n "$first" ]; then
        measure "$first" "restic" "rm -rf $work/restic && restic -q -r $work/restic init" \
            "restic -q -r $work/restic backup $src"
    else
        rm -rf "$work/restic" && restic -q -r "$work/restic" init && restic -q -r "$work/restic" backup "$src"
    fi
    if [ "$set" = photos ] && wants rerun; then
        measure rerun "restic" ":" "restic -q -r $work/restic backup $src"
    fi
    rm -rf "$work/restic" "$work/restic-cache"

    if [ -n "$first" ]; then
        measure "$first" "borg" "rm -rf $work/borg && borg init -e none $work/borg" \
            "borg create $work/borg::\$(date +%s%N) $src"
    else
        rm -rf "$work/borg" && borg init -e none "$work/borg" && borg create "$work/borg::first" "$src"
    fi
    if [ "$set" = photos ] && wants rerun; then
        measure rerun "borg" ":" "borg create $work/borg::\$(date +%s%N) $src"
    fi
    rm -rf "$work/borg" "$work/borg-home"

    annex_setup="rm -rf $work/annex && git init -q $work/annex && git -C $work/annex annex init -q && cp -r $src $work/annex/ && sync"
    if [ -n "$first" ]; then
        measure "$first" "git annex add" "$annex_setup" "cd $work/annex && git annex add --quiet ."
    else
        eval "$annex_setup" && (cd "$work/annex" && git annex add --quiet .)
    fi
    if [ "$set" = photos ] && wants rerun; then
        measure rerun "git annex add" ":" "cd $work/annex && git annex add --quiet ."
    fi
    chmod -R u+w "$work/annex" && rm -rf "$work/annex"
done

echo "== results" >&2
cat "$results" >&2
python3 - "$results" "$root/BENCHMARKS.md" "$runs" <<'EOF'
import os, platform, subprocess, sys
results, doc, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = []
harness = 0
for line in open(results):
    parts = line.split()
    # The tool's name may hold spaces: the last fields are numbers.
    scenario = parts[0]
    times = []
    while parts[-1].isdigit() and len(times) < runs:
        times.insert(0, int(parts.pop()))
    rss = int(parts.pop())
    median = int(parts.pop())
    tool = " ".join(parts[1:])
    if scenario == "harness":
        harness = median
        continue
    rows.append((scenario, tool, median, rss, times))
describe = {
    "photos": "`unique`: 342 files of 3 MiB (1 GiB) into an empty repository",
    "rerun": "`reupload`: the same folder again into the same repository",
    "album": "`cross_album`: the same folder into a second album (all linked)",
    "thumbs": "`thumbnails`: 20,000 files of 16 KiB (313 MiB) into an empty repository",
    "big": "`big_file`: one 2 GiB file into an empty repository",
}
def cpu():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()
def fs_of(path):
    out = subprocess.run(["df", "-T", path], capture_output=True, text=True).stdout.splitlines()
    return out[-1].split()[1] if len(out) > 1 else "?"
def version(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0].strip()
    except Exception:
        return "?"
mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
out = []
out.append(f"Measured by `benches/compare.sh` ({runs} runs per row, median), on "
           f"{os.cpu_count()} cores ({cpu()}), {mem:.0f} GiB, {fs_of(os.path.dirname(results))} "
           f"file system, Linux {platform.release()}; {version(['restic', 'version'])}, "
           f"{version(['borg', '--version'])}, {version(['git-annex', 'version'])}, {version(['b3sum', '--version'])}. "
           f"Every time includes the harness's own {harness} ms (bash, `/usr/bin/time` and `sync` after an empty command, "
           f"median in the same run); where that matters, ratios are also given without it.")
out.append("")
for scenario in ["photos", "rerun", "album", "thumbs", "big"]:
    mine = [r for r in rows if r[0] == scenario]
    if not mine:
        continue
    out.append(f"### {describe[scenario]}")
    out.append("")
    out.append("| tool | median | runs (ms) | peak RSS |")
    out.append("|---|---:|---|---:|")
    for _, tool, median, rss, times in mine:
        out.append(f"| {tool} | {median / 1000:.2f} s | {', '.join(map(str, times))} | {rss / 1024:.0f} MiB |")
    out.append("")
    others = [(t, m) for _, t, m, _, _ in mine if not t.startswith("keepsake")]
    for _, tool, median, _, _ in mine:
        if tool.startswith("keepsake") and others:
            ratios = ", ".join(f"{median / m:.2f} x {t}" for t, m in others if m)
            out.append(f"- {tool}: {ratios}")
            if median < 20 * harness:
                net = ", ".join(f"{(median - harness) / (m - harness):.2f} x {t}" for t, m in others if m > harness)
                out.append(f"  - without the harness's own {harness} ms in both: {net}")
    out.append("")
table = "\n".join(out)
begin, end = "<!-- compare:begin -->", "<!-- compare:end -->"
text = open(doc).read() if os.path.exists(doc) else f"# Benchmarks\n\n{begin}\n{end}\n"
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
open(doc, "w").write(f"{head}{begin}\n{table}\n{end}{tail}")
print(table)
EOF
