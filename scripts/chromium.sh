#!/usr/bin/env bash
# Install headless Chromium (Debian package) for the HTML report's browser test.
#
#   scripts/chromium.sh install   # apt-get install chromium (when /usr/bin/chromium is missing)
set -euo pipefail

case "${1:-}" in
  install)
    if [ ! -x /usr/bin/chromium ]; then
      export DEBIAN_FRONTEND=noninteractive
      SUDO=""
      [ "$(id -u)" = 0 ] || SUDO="sudo"
      $SUDO apt-get update -qq
      $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
    fi
    /usr/bin/chromium --version
    ;;
  *)
    echo "usage: $0 install" >&2
    exit 2
    ;;
esac
