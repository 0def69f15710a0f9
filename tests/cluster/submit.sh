#!/usr/bin/env bash
# Stand-in scheduler for tests: `submit.sh STATE RULE MEM_MB RUNTIME CPUS JOBSCRIPT`.
# Runs the job script in the background, prints a job id, and records the request in
# STATE/submissions.tsv. Like a real scheduler it enforces memory: a rule listed in STATE/limits.tsv
# ("rule<TAB>min_mem_mb") asked for with less memory is killed as out of memory (exit 137).
set -euo pipefail
state=$1 rule=$2 mem_mb=$3 runtime=$4 cpus=$5 jobscript=$6
mkdir -p "$state"
id="job$(date +%s%N)$$"
printf '%s\t%s\t%s\t%s\t%s\n' "$id" "$rule" "$mem_mb" "$runtime" "$cpus" >>"$state/submissions.tsv"
need=0
if [[ -f "$state/limits.tsv" ]]; then
    need=$(awk -F'\t' -v r="$rule" '$1 == r {print $2}' "$state/limits.tsv")
    need=${need:-0}
fi
if ((mem_mb < need)); then
    echo 137 >"$state/$id.exit"  # out of memory: killed before it could finish
    echo "$id"
    exit 0
fi
# The job must not hold the submitter's stdout open, or snakemake would wait for it to end.
(
    bash "$jobscript" >"$state/$id.out" 2>&1 && code=0 || code=$?
    echo "$code" >"$state/$id.exit.tmp"
    mv "$state/$id.exit.tmp" "$state/$id.exit"
) </dev/null >/dev/null 2>&1 &
echo $! >"$state/$id.pid"
echo "$id"
