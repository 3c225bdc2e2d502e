#!/usr/bin/env bash
# Runs the test suite for `make test`. pytest exits 5 when it collected no test at all:
# that is a broken suite, not a pass, so it becomes a failure here.
set -u
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
.venv/bin/python -m pytest "$@"
status=$?
if [ "$status" -eq 5 ]; then
  echo "error: pytest collected no tests; failing on purpose" >&2
  exit 1
fi
exit "$status"
