#!/bin/sh
# Inside a Vagrant VM, as root: the project's integration tests on the VM's kernel.
#   vagrant ssh -c 'cd /vagrant && sudo vagrant/guest-test.sh [pytest args]'
# Uses the checkout's .venv when provisioning ran `make install`, else the offline box's
# /opt/coral-venv with the checkout on PYTHONPATH. Writes junit XML to $CORAL_JUNIT_XML
# (default /tmp/coral-integration.xml) and exits with pytest's status.
set -eu
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "guest-test.sh: run as root (sudo): the tests load BPF programs" >&2; exit 2; }
if [ -x .venv/bin/python ]; then
    python=.venv/bin/python
elif [ -x /opt/coral-venv/bin/python ]; then
    python=/opt/coral-venv/bin/python
    export PYTHONPATH="$PWD"
else
    echo "guest-test.sh: no .venv and no /opt/coral-venv: run 'make install' in /vagrant first" >&2
    exit 2
fi
export PYTHONDONTWRITEBYTECODE=1 PY_COLORS=0 HYPOTHESIS_STORAGE_DIRECTORY=/tmp/coral-hypothesis
echo "guest-test.sh: kernel $(uname -r), $python, CORAL_TEST_TIME_SCALE=${CORAL_TEST_TIME_SCALE:-1}"
# CORAL_VM_SUITE=kernel (default): the kernel-facing tests (pytest marker `kernel`); all: every one.
case "${CORAL_VM_SUITE:-kernel}" in
    kernel) set -- -m kernel "$@" ;;
    all) ;;
    *) echo "guest-test.sh: CORAL_VM_SUITE must be kernel or all" >&2; exit 2 ;;
esac
exec "$python" -m pytest tests/integration -p no:cacheprovider -q -ra \
    --junitxml="${CORAL_JUNIT_XML:-/tmp/coral-integration.xml}" "$@"
