#!/usr/bin/env bash
# Regenerate constraints/py3.X.txt: every package the dev/test install uses, pinned.
# Airflow's published constraint files cannot be downloaded here, so the lock is ours.
set -euo pipefail
cd "$(dirname "$0")/.."
uv_bin=${UV:-uv}
for py in 3.11 3.12; do
  "$uv_bin" pip compile setup.cfg --extra dev --constraint constraints/pins.in \
    --python-version "$py" --python-platform x86_64-unknown-linux-gnu --no-header --no-annotate \
    --index-url https://pypi.org/simple \
    --output-file "constraints/py$py.txt"
  # the project itself is installed from the checkout, never pinned
  sed -i '/^airflow-spark-portable/d' "constraints/py$py.txt"
done
