#!/usr/bin/env bash
# The GPU check: gpu tests + throughput benchmark, written to results/gpu/report.md (<= 8 minutes).
#
# On a fresh CUDA machine, after the README's install (pip install torch==2.13.0 && pip install -e ".[test]"):
#     bash results/gpu/check.sh
# Without a GPU (what the test suite runs; tiny sizes, numbers meaningless):
#     bash results/gpu/check.sh --device cpu --out /tmp/gpu-check
# Options: python results/gpu/check.py --help
set -euo pipefail
cd "$(dirname "$0")/../.."
exec python results/gpu/check.py "$@"
