#!/usr/bin/env bash
# Stand-in scheduler for tests: `status.sh STATE JOBID` prints running, success or failed.
set -euo pipefail
state=$1 id=$2
if [[ -f "$state/$id.exit" ]]; then
    [[ "$(cat "$state/$id.exit")" == 0 ]] && echo success || echo failed
elif [[ -f "$state/$id.pid" ]] && kill -0 "$(cat "$state/$id.pid")" 2>/dev/null; then
    echo running
elif [[ -f "$state/$id.exit" ]]; then  # it ended between the two checks
    [[ "$(cat "$state/$id.exit")" == 0 ]] && echo success || echo failed
else
    echo failed  # gone without an exit status: lost, as a node failure would
fi
