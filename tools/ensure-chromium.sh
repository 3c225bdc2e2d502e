#!/usr/bin/env bash
# Makes sure Debian's Chromium is at /usr/bin/chromium, for the browser test of the web page
# (tests/test_web_e2e.py drives it through Playwright; Playwright's own browser download is
# not used). Run by `make test` before pytest. Installs it with apt-get when run as root;
# otherwise says how to install it and fails.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
  exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "ensure-chromium: $CHROMIUM is missing; installing Debian's chromium package" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  if [ -x "$CHROMIUM" ]; then
    echo "ensure-chromium: installed $("$CHROMIUM" --version 2>/dev/null || echo chromium)" >&2
    exit 0
  fi
  echo "error: apt-get installed chromium but $CHROMIUM is still missing" >&2
  exit 1
fi

cat >&2 <<MSG
error: $CHROMIUM is missing; the web page's browser test (tests/test_web_e2e.py) needs it.
Install Debian's chromium package, then run make test again:
    sudo apt-get update && sudo apt-get install -y chromium
(On another distribution, install Chromium so that $CHROMIUM exists, e.g. a symlink to it.)
MSG
exit 1
