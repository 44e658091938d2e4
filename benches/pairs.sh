#!/usr/bin/env bash
# The spread of one scenario, not only its median: a first backup of 1 GiB
# of 3 MiB photos beside `cp -r` + `sync`, and a `--rehash` re-run beside
# `b3sum`, alternated run by run (so that a slow minute of the disk or the
# host falls on both sides of a pair), printing every pair and its ratio.
#
#   benches/pairs.sh                       # 9 pairs
#   KEEPSAKE_PAIRS=15 benches/pairs.sh
#   KEEPSAKE_BASELINE=/path/to/old/keepsake benches/pairs.sh   # a third column
#
# The photos are those of benches/compare.sh (342 files of 3 MiB,
# deterministic pseudo-random bytes), generated under a scratch folder.
# Every timed command ends with `sync` inside its timing.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pairs="${KEEPSAKE_PAIRS:-9}"
baseline="${KEEPSAKE_BASELINE:-}"

# shellcheck source=benches/measure.sh
source "$root/benches/measure.sh"
prepare

work="$(mktemp -d "${TMPDIR:-/var/tmp}/keepsake-pairs.XXXXXX")"
trap 'rm -rf "$work"' EXIT
python3 - "$work/photos" <<'EOF'
import os, random, sys
os.makedirs(sys.argv[1])
for i in range(342):
    rng = random.Random(1 * 1_000_003 + i)
    with open(os.path.join(sys.argv[1], f"IMG_{i:05}.JPG"), "wb") as f:
        f.write(rng.randbytes(3 << 20))
EOF
sync

# median: the median of the numbers on standard input.
median() {
    sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

# ms COMMAND: runs COMMAND then `sync`, and prints the milliseconds taken.
ms() {
    local t0 t1
    t0=$(date +%s%N)
    bash -c "$1" >/dev/null
    sync
    t1=$(date +%s%N)
    echo $(((t1 - t0) / 1000000))
}

# pairs TITLE SETUP LIMIT ARGS: $pairs times, runs SETUP (untimed), then
# the LIMIT command, then keepsake with ARGS (and the baseline with ARGS,
# its store in place of keepsake's), each timed; prints each pair with its
# ratios, then the median ratios.
pairs() {
    local title="$1" setup="$2" limit="$3" args="$4" rows="$work/rows" i
    : >"$rows"
    echo "$title"
    for ((i = 0; i < pairs; i++)); do
        eval "$setup"
        local limit_ms ks_ms line ratios
        limit_ms=$(ms "$limit")
        ks_ms=$(ms "$ks --store $work/ks $args")
        line="$limit_ms $ks_ms"
        ratios="$(python3 -c "print(f'{$ks_ms / $limit_ms:.2f}')")"
        if [ -n "$baseline" ]; then
            local base_ms
            base_ms=$(ms "$baseline --store $work/base $args")
            line="$line $base_ms"
            ratios="$ratios $(python3 -c "print(f'{$base_ms / $limit_ms:.2f}')")"
        fi
        echo "$line  $ratios" | tee -a "$rows"
    done
    local first=3 last=3 c
    [ -n "$baseline" ] && first=4 last=5
    echo "median ratios: $(for ((c = first; c <= last; c++)); do awk -v c="$c" '{ print $c }' "$rows" | median; done | xargs)"
    echo
}

src="$work/photos"
others="keepsake${baseline:+ baseline}"
pairs "first backup (ms): cp+sync $others, ratios to cp+sync" \
    'rm -rf "$work/cp" "$work/ks" "$work/base" && sync' \
    "cp -r $src $work/cp" "backup $src --album A"
pairs "--rehash re-run (ms): b3sum $others, ratios to b3sum" \
    ':' "b3sum $src/*" "backup --rehash $src --album A"
