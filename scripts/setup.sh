#!/usr/bin/env bash
# Create .venv and install the provider with everything the demo and the tests need,
# pinned by constraints/py3.X.txt. Re-running is cheap: nothing happens if nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

python_bin=${PYTHON:-}
if [ -z "$python_bin" ]; then
  # Run each candidate: a pyenv shim exists for versions that are installed but not selected.
  for candidate in python3.11 python3.12 python3; do
    if "$candidate" -c 'import sys; assert sys.version_info[:2] in ((3, 11), (3, 12))' >/dev/null 2>&1; then
      python_bin=$candidate; break
    fi
  done
fi
if [ -z "$python_bin" ]; then
  echo "No Python 3.11 or 3.12 found: install one, or set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
py_version=$("$python_bin" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
constraints="constraints/py$py_version.txt"
if [ ! -f "$constraints" ]; then
  echo "Python $py_version is not supported: use Python 3.11 or 3.12 (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi

# The local engine runs pyspark's spark-submit, which needs a Java runtime (17 or 21).
if ! command -v java >/dev/null 2>&1 && [ -z "${JAVA_HOME:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing Java 17 for Spark..."
    apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless >/dev/null
  else
    echo "Spark needs Java 17 or 21: install a JDK (e.g. apt-get install openjdk-17-jre-headless) or set JAVA_HOME" >&2
    exit 1
  fi
fi

[ -x .venv/bin/python ] || "$python_bin" -m venv .venv
stamp=".venv/.installed-$(cat setup.cfg pyproject.toml "$constraints" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "Installing into .venv (Python $py_version, pinned by $constraints)..."
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --constraint "$constraints" -e '.[dev]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
