#!/usr/bin/env bash
# The project's one test command: installs the test tools that are missing, then runs every test.
# A tool that cannot be had fails the run loudly; no test is skipped for want of it.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/flotilla/target}"
mkdir -p "$CARGO_TARGET_DIR"

need_pip() { # need_pip <python module> <pip requirement>
  if ! python3 -c "import $1" 2>/dev/null; then
    echo "test.sh: installing $2 from PyPI"
    python3 -m pip install --quiet --disable-pip-version-check "$2"
  fi
}

# kubectl: the integration tests drive the stock binary against the simulator.
if ! command -v kubectl >/dev/null 2>&1; then
  echo "test.sh: kubectl is missing; trying Debian's package" >&2
  (apt-get update -qq && apt-get install -y -qq kubernetes-client) >/dev/null 2>&1 || true
fi
command -v kubectl >/dev/null 2>&1 || { echo "test.sh: FATAL: kubectl is required and could not be installed" >&2; exit 1; }

# The AWS CLI (simulated EKS / Auto Scaling checks) and helm-python-sdk (chart lint and render).
if ! command -v aws >/dev/null 2>&1; then
  echo "test.sh: installing awscli from PyPI"
  python3 -m pip install --quiet --disable-pip-version-check awscli
fi
command -v aws >/dev/null 2>&1 || { echo "test.sh: FATAL: the AWS CLI could not be installed" >&2; exit 1; }
need_pip helm_python helm-python-sdk==0.2.2

echo "test.sh: kubectl $(kubectl version --client 2>/dev/null | head -1), $(aws --version 2>&1)"
exec cargo test --workspace "$@"
