#!/usr/bin/env bash
# checkov in its own virtualenv (.tools/checkov): its dependency set conflicts with the pinned serving stack.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=3.3.30
if [ -x .tools/checkov/bin/checkov ] && .tools/checkov/bin/checkov --version 2>/dev/null | grep -qx "$VERSION"; then
  exit 0
fi
python3 -m venv .tools/checkov
.tools/checkov/bin/pip install -q "checkov==$VERSION"
