#!/usr/bin/env bash
# The cluster pool beside mpi4py.futures, same machine, same ranks, one run:
#   benches/cluster/run.sh [RANKS...]      (default: 2 3 — one and two worker ranks)
# Set-up: Open MPI (libopenmpi-dev openmpi-bin libclang-dev) and mpi4py in a virtual
# environment (target/bench/mpi4py-venv, made here with pip on first use).
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
VENV=target/bench/mpi4py-venv
if [[ ! -x $VENV/bin/python ]] || ! "$VENV/bin/python" -c 'import mpi4py' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet mpi4py
fi
cargo build --release --features mpi --bench cluster
bin=$(ls -t target/release/deps/cluster-* | grep -v '\.d$' | head -1)
ranks=("$@")
((${#ranks[@]})) || ranks=(2 3)
echo "date $(date -u +%Y-%m-%dT%H:%M:%SZ); nproc $(nproc); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "mpirun $(mpirun --version | head -1); $("$VENV/bin/python" -c 'import mpi4py, sys; print("mpi4py", mpi4py.__version__, "python", sys.version.split()[0])')"
for n in "${ranks[@]}"; do
  echo "== multiproc, mpirun -n $n --oversubscribe (load $(cut -d' ' -f1 /proc/loadavg))"
  mpirun -n "$n" --oversubscribe "$bin" --bench
  echo "== mpi4py.futures, mpirun -n $n --oversubscribe (load $(cut -d' ' -f1 /proc/loadavg))"
  mpirun -n "$n" --oversubscribe "$VENV/bin/python" -m mpi4py.futures benches/cluster/mpi4py_bench.py
done
