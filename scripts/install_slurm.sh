#!/usr/bin/env bash
# Install a single-node Slurm (Debian's slurmd, slurmctld, client, munge) for the heavy test that
# runs organiser mode on a real Slurm (tests/compete/test_slurm.py starts and stops its daemons in
# a folder of its own). Needs root and apt-get; where either is missing that test skips, saying so.
set -euo pipefail
if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "install_slurm.sh: needs root and apt-get; the Slurm test will skip" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends slurmd slurmctld slurm-client munge >/dev/null
