#!/usr/bin/env bash
# Autobahn|Testsuite fuzzingclient against corral: all 517 cases, the permessage-deflate
# groups 12.* and 13.* included. By hand only (about 20 minutes), not in CI.
#
#   tests/autobahn.sh [extra corral flags, e.g. --loop asyncio --http h11]
#
# Starts `corral tests.ws_apps:echo` on a free loopback port, runs the shared runner
# (../shared/autobahn/run_autobahn.sh, or $AUTOBAHN_RUNNER) three times, since wstest writes
# its reports only when a run ends and the deflate groups are slow, then prints the counts
# per case group. Exit status 0 only when no case FAILED or was UNIMPLEMENTED.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
runner="${AUTOBAHN_RUNNER:-$root/../shared/autobahn/run_autobahn.sh}"
py="$root/.venv/bin/python"
out="${AB_ROOT:-/tmp/autobahn/run}"

port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$root/.venv/bin/corral" tests.ws_apps:echo --host 127.0.0.1 --port "$port" \
    --no-access-log --log-level warning "$@" &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT

# Wait (bounded, 10 s) until the server accepts connections.
"$py" - "$port" <<'PY'
import socket, sys, time
deadline = time.monotonic() + 10
while True:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit("corral did not start listening within 10 s")
        time.sleep(0.05)
PY

status=0
AB_OUT="$out/corral-core" "$runner" "$port" corral '["*"]' '["12.*","13.*"]' 600 || status=1
AB_OUT="$out/corral-12" "$runner" "$port" corral '["12.*"]' '[]' 1500 || status=1
AB_OUT="$out/corral-13" "$runner" "$port" corral '["13.*"]' '[]' 1500 || status=1

"$py" - "$out" <<'PY'
import collections, json, sys
from pathlib import Path

groups = collections.defaultdict(collections.Counter)
for part in ("corral-core", "corral-12", "corral-13"):
    index = Path(sys.argv[1], part, "reports", "index.json")
    if not index.exists():
        print(f"missing {index}")
        continue
    for agent in json.loads(index.read_text()).values():
        for case, result in agent.items():
            groups[case.split(".")[0]][result["behavior"]] += 1
total = collections.Counter()
for group in sorted(groups, key=int):
    total.update(groups[group])
    print(f"{group:>3}.*  " + "  ".join(f"{k}={v}" for k, v in sorted(groups[group].items())))
print(f"all {sum(total.values())} cases  " + "  ".join(f"{k}={v}" for k, v in sorted(total.items())))
PY
exit "$status"
