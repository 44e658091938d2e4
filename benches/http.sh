#!/usr/bin/env bash
# The HTTP face under load (benches/http_load.py): 16 concurrent clients against
# `keepsake backup`, the bulk preflight's latency and rate, and the server's
# memory for one 2 GiB upload. Prints Markdown tables.
#
#   benches/http.sh              # 3 rounds of the concurrent uploads
#   KEEPSAKE_ROUNDS=5 benches/http.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=benches/measure.sh
source "$root/benches/measure.sh"
prepare curl=curl
python3 -P "$root/benches/http_load.py" "$ks" "${KEEPSAKE_ROUNDS:-3}"
