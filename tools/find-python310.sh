#!/usr/bin/env bash
# Prints the path of a Python 3.10 interpreter (tfx 1.16 needs Python < 3.11).
# Order: $PYTHON, python3.10 on PATH (pyenv reads .python-version), pyenv's 3.10.x.
# With --explain, says what to do when there is none.
set -u
is_310() { "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null; }

if [ "${1:-}" = "--explain" ]; then
  cat >&2 <<'MSG'
error: no Python 3.10 found. tfx 1.16 needs Python 3.10 (not 3.11+).
  - install it (pyenv install 3.10.13, or your OS package python3.10), or
  - point to one: make install PYTHON=/path/to/python3.10
MSG
  exit 1
fi
for candidate in "${PYTHON:-}" python3.10 python3 python; do
  [ -n "$candidate" ] || continue
  path=$(command -v "$candidate" 2>/dev/null) || continue
  if is_310 "$path"; then echo "$path"; exit 0; fi
done
if command -v pyenv >/dev/null 2>&1; then
  for v in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.10\.' | sort -rV); do
    path="$(pyenv root)/versions/$v/bin/python3.10"
    if is_310 "$path"; then echo "$path"; exit 0; fi
  done
fi
exit 0
