#!/usr/bin/env bash
# `make test-slurm`: the data half of the embedded demo (every rule up to and including `benchmark`,
# target results/benchmark/manifest.json) through profiles/slurm on a real single-node SLURM cluster.
#
#   sudo tests/cluster/run_demo_data_half.sh [REPO]      (REPO: default, this checkout)
#
# 1. tests/cluster/slurm_up.sh brings the cluster up on 127.0.0.1 (apt packages, config, daemons).
# 2. A fresh clone of REPO's HEAD under /tmp, so the run sees only what is committed (no results/,
#    no .snakemake/ state of this checkout).
# 3. A venv for the run that layers on the project's .venv (one .pth line: the locked packages are
#    used as installed, nothing is copied) and adds what the profile needs on top of the lock:
#    snakemake-executor-plugin-slurm, installed as the README's cluster section says
#    (`pip install -c requirements/lock-runtime.txt ".[slurm]"`), and the clone itself (editable),
#    so every job imports the clone's vlalert. The project's .venv is not changed.
# 4. `snakemake --profile profiles/slurm results/benchmark/manifest.json` in the clone: every job is
#    an sbatch job (the downloads and layout checks are localrules), states read with sacct.
# 5. Checks: snakemake exits 0, the manifest exists, and sacct lists every job of this run (by the
#    run's start time on this private cluster) as COMPLETED with exit code 0:0.
# Prints the wall time of step 4 and the job count; exits non-zero on any failure. The clone is
# kept on failure (its .snakemake/slurm_logs/ hold each job's log) and removed on success unless
# VLALERT_KEEP=1.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "${1:-$HERE/../..}" && pwd)
VENV=${VLALERT_VENV:-$REPO/.venv}
export VLALERT_SLURM_ACCOUNT=${VLALERT_SLURM_ACCOUNT:-vlalert}
export VLALERT_SLURM_PARTITION=${VLALERT_SLURM_PARTITION:-debug}
TARGET=results/benchmark/manifest.json

say() { printf '[test-slurm %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { say "FAILED: $*"; exit 1; }

[[ -x $VENV/bin/python ]] || die "no venv at $VENV: run \`make install\` first (or set VLALERT_VENV)"

"$HERE/slurm_up.sh" up

WORK=$(mktemp -d /tmp/vlalert-slurm.XXXXXX)
say "fresh clone of $REPO ($(git -C "$REPO" rev-parse --short HEAD)) in $WORK/repo"
git clone -q "$REPO" "$WORK/repo"
cd "$WORK/repo"

# The run's venv: the project's packages through a .pth line, the plugin and the clone on top.
"$VENV/bin/python" -c 'import sys; print(sys._base_executable)' >"$WORK/base_python"
# --without-pip: the venv's own pip and setuptools would shadow the locked ones of .venv.
"$(cat "$WORK/base_python")" -m venv --without-pip "$WORK/venv"
PY=$WORK/venv/bin/python
site_new=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' >"$site_new/_vlalert_base.pth"
say "installing the slurm executor plugin (constrained by the lock) and the clone into $WORK/venv"
"$PY" -m pip install -q --disable-pip-version-check -c requirements/lock-runtime.txt "snakemake-executor-plugin-slurm>=2.0"
"$PY" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
"$PY" -c 'import vlalert, sys; assert vlalert.__file__.startswith(sys.argv[1]), vlalert.__file__' "$WORK/repo"
export PATH=$WORK/venv/bin:$PATH

since=$(date +%Y-%m-%dT%H:%M:%S)
start=$(date +%s)
say "snakemake --profile profiles/slurm $TARGET"
set +e
"$PY" -m snakemake --profile profiles/slurm "$TARGET" >"$WORK/snakemake.log" 2>&1
rc=$?
set -e
wall=$(($(date +%s) - start))
tail -n 5 "$WORK/snakemake.log" >&2

# The jobs Snakemake submitted ("Job N has been submitted with SLURM jobid M (log: .../rule_R/...)"),
# and every job of the run in the accounting database: sbatch --job-name is the plugin's run id.
sleep 2  # the last job's end record reaches slurmdbd shortly after the job ends
run_id=$(sed -n 's/^SLURM run ID: //p' "$WORK/snakemake.log" | head -1)
sed -n 's/.*submitted with SLURM jobid \([0-9]*\) (log: .*\/rule_\([^/]*\)\/.*/\1|\2/p' \
    "$WORK/snakemake.log" | sort -t'|' -k1,1 >"$WORK/submitted.tsv"
sacct -X -n -P -S "$since" --name="${run_id:-none}" -o JobID,State,ExitCode,Elapsed |
    sort -t'|' -k1,1 >"$WORK/sacct.tsv"
join -t'|' "$WORK/submitted.tsv" "$WORK/sacct.tsv" >"$WORK/jobs.tsv" || true
n_submitted=$(grep -c . "$WORK/submitted.tsv" || true)
n_jobs=$(grep -c . "$WORK/sacct.tsv" || true)
bad=$(awk -F'|' '$3 != "COMPLETED" || $4 != "0:0"' "$WORK/jobs.tsv")

say "snakemake exit $rc; wall ${wall}s; run $run_id: $n_submitted job(s) submitted, $n_jobs in sacct"
say "jobs per rule: $(cut -d'|' -f2 "$WORK/jobs.tsv" | sort | uniq -c | awk '{printf "%s %s, ", $2, $1}')"
column -t -s'|' "$WORK/jobs.tsv" >&2 || cat "$WORK/jobs.tsv" >&2
if ((rc != 0)); then
    die "snakemake exited $rc (log: $WORK/snakemake.log, job logs: $WORK/repo/.snakemake/slurm_logs/)"
fi
[[ -s $TARGET ]] || die "$TARGET was not written"
((n_submitted > 0)) || die "Snakemake submitted no job to SLURM"
((n_jobs == n_submitted)) && [[ $(grep -c . "$WORK/jobs.tsv") == "$n_submitted" ]] ||
    die "sacct lists $n_jobs job(s) of run $run_id, Snakemake submitted $n_submitted"
[[ -z $bad ]] || die "jobs that did not complete:"$'\n'"$bad"
say "OK: all $n_jobs SLURM jobs COMPLETED (sacct), $TARGET written, ${wall}s"
if [[ ${VLALERT_KEEP:-0} != 1 ]]; then
    cd /
    rm -rf "$WORK"
fi
