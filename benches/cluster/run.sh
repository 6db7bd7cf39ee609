#!/usr/bin/env bash
# The cluster pool beside mpi4py.futures, same machine, same ranks, one run:
#   benches/cluster/run.sh [RANKS...]      (default: 2 3 — one and two worker ranks)
# Prints each program's raw lines, then one side-by-side table (ranges over the repeats,
# the load average before and after each program).
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
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
load() { cut -d' ' -f1 /proc/loadavg; }
{
  echo "date $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "machine $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
  echo "mpirun $(mpirun --version | head -1)"
  echo "python $("$VENV/bin/python" -c 'import mpi4py, sys; print("mpi4py", mpi4py.__version__, "python", sys.version.split()[0])')"
} | tee "$out/head"
for n in "${ranks[@]}"; do
  echo "== multiproc, mpirun -n $n --oversubscribe"
  { echo "load_before $(load)"
    mpirun -n "$n" --oversubscribe "$bin" --bench
    echo "load_after $(load)"; } | tee "$out/mp.$n"
  echo "== mpi4py.futures, mpirun -n $n --oversubscribe"
  { echo "load_before $(load)"
    mpirun -n "$n" --oversubscribe "$VENV/bin/python" -m mpi4py.futures benches/cluster/mpi4py_bench.py
    echo "load_after $(load)"; } | tee "$out/py.$n"
done
python3 benches/cluster/table.py "$out" "${ranks[@]}"
