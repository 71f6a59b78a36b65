#!/usr/bin/env bash
# rlkit on several Slurm nodes: one `accelerate launch` per training node (8 GPUs each by default), and for GRPO
# in vLLM server mode one more node running `./run.sh serve`. Submit from the repository root:
#
#   sbatch --nodes N experiments/paper/slurm.sh RECIPE.yaml [ACCEL_CONFIG.yaml] [key=value ...]
#   VLLM_SERVER=1 sbatch --nodes N+1 experiments/paper/slurm.sh GRPO_RECIPE.yaml [ACCEL_CONFIG.yaml] [key=value ...]
#
# e.g.
#   sbatch --nodes 4 experiments/paper/slurm.sh experiments/paper/qwen2_5_vl_7b_sft.yaml \
#       experiments/paper/accelerate/fsdp2_qwen2_5_vl.yaml
#   VLLM_SERVER=1 sbatch --nodes 3 experiments/paper/slurm.sh experiments/paper/qwen2_5_vl_3b_grpo.yaml
#
# ACCEL_CONFIG defaults to experiments/paper/accelerate/ddp.yaml; key=value overrides go to rlkit unchanged.
# VLLM_SERVER=1: the LAST node runs the vLLM server (one GPU unless SERVE_ARGS asks for more, e.g.
# SERVE_ARGS="--tensor_parallel_size 2"), the others train with train.use_vllm=true train.vllm_mode=server
# train.vllm_server_host=<last node>. The server gets the same recipe and overrides, so it uses the same model and
# image-pixel bounds as training.
#
# Environment (all optional):
#   GPUS_PER_NODE=8          processes per training node (keep it equal to --gpus-per-node)
#   MAIN_PROCESS_PORT=29500  c10d rendezvous port on the first node
#   MAIN_PROCESS_IP          rendezvous host (default: the first node's Slurm name; set it if that name does not
#                            resolve to the node's fast network)
#   VLLM_SERVER=1, VLLM_PORT=8000, VLLM_SERVER_TIMEOUT=900 (seconds the trainers wait for the server), SERVE_ARGS
#   RLKIT_VENV=.venv         the virtual environment (create it once, e.g. with ./run.sh test, before submitting)
#   SRUN_ARGS                extra srun options for every step (site specific, e.g. "--mpi=none")
#   DRY_RUN=1                print "NODE: COMMAND" for every node instead of running anything; works without Slurm
#                            when SLURM_NODE_NAMES="node-a node-b ..." names the nodes
#   SLURM_NODE_NAMES         space-separated node names; overrides `scontrol show hostnames $SLURM_JOB_NODELIST`
#
# NCCL: set what your fabric needs before sbatch (srun passes the environment on), e.g.
#   export NCCL_SOCKET_IFNAME=ib0     # or eth0/ens*: the interface NCCL's bootstrap and socket transport use
#   export NCCL_IB_HCA=mlx5           # InfiniBand adapters to use; NCCL_IB_DISABLE=1 forces TCP (no InfiniBand)
# This script defaults NCCL_DEBUG=WARN (INFO shows the chosen transport when debugging a hang) and
# TORCH_NCCL_ASYNC_ERROR_HANDLING=1 (a dead rank aborts the others instead of hanging until the timeout).
#
#SBATCH --job-name=rlkit
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --exclusive
#SBATCH --mem=0
#SBATCH --output=%x-%j.out
set -euo pipefail

die() { echo "slurm.sh: $*" >&2; exit 2; }

# sbatch runs a copy of this file from a spool folder, so find the repository from the submit folder.
cd "${RLKIT_DIR:-${SLURM_SUBMIT_DIR:-$PWD}}"
[ -f run.sh ] && [ -d rlkit ] || die "run it from the rlkit repository root (now in $PWD)"

[ $# -ge 1 ] || die "usage: sbatch --nodes N experiments/paper/slurm.sh RECIPE.yaml [ACCEL_CONFIG.yaml] [key=value ...]"
recipe=$1
shift
accel_config=experiments/paper/accelerate/ddp.yaml
if [ $# -ge 1 ] && [[ $1 == *.yaml || $1 == *.yml ]] && [[ $1 != *=* ]]; then
  accel_config=$1
  shift
fi
overrides=("$@")
user_overrides=("$@")  # the server gets these, not the vllm_* ones added below
[ -f "$recipe" ] || die "recipe $recipe not found"
[ -f "$accel_config" ] || die "accelerate config $accel_config not found"

gpus_per_node=${GPUS_PER_NODE:-8}
port=${MAIN_PROCESS_PORT:-29500}
vllm_server=${VLLM_SERVER:-0}
vllm_port=${VLLM_PORT:-8000}
dry_run=${DRY_RUN:-0}
venv=${RLKIT_VENV:-.venv}

if [ -n "${SLURM_NODE_NAMES:-}" ]; then
  read -r -a nodes <<< "$SLURM_NODE_NAMES"
elif [ -n "${SLURM_JOB_NODELIST:-}" ] && command -v scontrol > /dev/null; then
  mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
else
  die "no nodes: run under sbatch, or set SLURM_NODE_NAMES=\"node-a node-b ...\" (with DRY_RUN=1 to test)"
fi
[ "${#nodes[@]}" -ge 1 ] || die "the node list is empty"

train_nodes=("${nodes[@]}")
server_node=
if [ "$vllm_server" = 1 ]; then
  [ "${#nodes[@]}" -ge 2 ] || die "VLLM_SERVER=1 needs at least 2 nodes (N for training + 1 for vLLM)"
  server_node=${nodes[-1]}
  train_nodes=("${nodes[@]:0:${#nodes[@]}-1}")
  overrides+=(train.use_vllm=true train.vllm_mode=server "train.vllm_server_host=$server_node"
              "train.vllm_server_port=$vllm_port" "train.vllm_server_timeout=${VLLM_SERVER_TIMEOUT:-900}")
fi
num_machines=${#train_nodes[@]}
num_processes=$((num_machines * gpus_per_node))
main_ip=${MAIN_PROCESS_IP:-${train_nodes[0]}}

export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
export TORCH_NCCL_ASYNC_ERROR_HANDLING=${TORCH_NCCL_ASYNC_ERROR_HANDLING:-1}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

# One srun step per node; c10d hosts the rendezvous store on main_process_ip (the first node) and assigns node
# ranks itself when the nodes join, so --machine_rank is informative only (checkpoints need a shared filesystem).
show() { printf '%s:' "$1"; shift; printf ' %q' "$@"; echo; }  # NODE COMMAND...: one copy-pasteable line

train_cmd() {  # $1: machine rank
  cmd=("$venv/bin/accelerate" launch --config_file "$accel_config"
       --num_machines "$num_machines" --num_processes "$num_processes" --machine_rank "$1"
       --main_process_ip "$main_ip" --main_process_port "$port" --rdzv_backend c10d
       -m rlkit "$recipe" ${overrides[@]+"${overrides[@]}"})
}
serve_cmd() {
  # $@: the user's overrides, so the server loads the same model and image-pixel bounds as the trainers
  cmd=(./run.sh serve "$recipe" ${@+"$@"} --serve-args --port "$vllm_port")
  if [ -n "${SERVE_ARGS:-}" ]; then
    read -r -a extra <<< "$SERVE_ARGS"
    cmd+=("${extra[@]}")
  fi
}

if [ "$dry_run" = 1 ]; then
  if [ -n "$server_node" ]; then
    serve_cmd ${user_overrides[@]+"${user_overrides[@]}"}
    show "$server_node" "${cmd[@]}"
  fi
  for i in "${!train_nodes[@]}"; do
    train_cmd "$i"
    show "${train_nodes[$i]}" "${cmd[@]}"
  done
  exit 0
fi

[ -x "$venv/bin/accelerate" ] || die "$venv/bin/accelerate not found: create the environment once before submitting (./run.sh test)"
command -v srun > /dev/null || die "srun not found: submit with sbatch (or use DRY_RUN=1)"
read -r -a srun_extra <<< "${SRUN_ARGS:-}"
# one task per node with all of the node's CPUs (a step otherwise gets one CPU per task)
srun_base=(srun --nodes=1 --ntasks=1 ${SLURM_CPUS_ON_NODE:+--cpus-per-task=$SLURM_CPUS_ON_NODE}
           ${srun_extra[@]+"${srun_extra[@]}"})

train_pids=()
server_pid=
cleanup() {
  for pid in ${train_pids[@]+"${train_pids[@]}"} $server_pid; do
    kill -TERM "$pid" 2> /dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 143' TERM INT

if [ -n "$server_node" ]; then
  serve_cmd ${user_overrides[@]+"${user_overrides[@]}"}
  show "[slurm.sh] $server_node" "${cmd[@]}"
  "${srun_base[@]}" --nodelist="$server_node" "${cmd[@]}" &
  server_pid=$!
fi
for i in "${!train_nodes[@]}"; do
  train_cmd "$i"
  show "[slurm.sh] ${train_nodes[$i]}" "${cmd[@]}"
  "${srun_base[@]}" --nodelist="${train_nodes[$i]}" "${cmd[@]}" &
  train_pids+=($!)
done

# Stop everything as soon as one training node fails or the server dies, instead of waiting for NCCL timeouts.
running=("${train_pids[@]}")
while [ "${#running[@]}" -gt 0 ]; do
  still=()
  for pid in "${running[@]}"; do
    if kill -0 "$pid" 2> /dev/null; then
      still+=("$pid")
    else
      rc=0
      wait "$pid" || rc=$?
      [ "$rc" -eq 0 ] || { echo "[slurm.sh] a training node failed (exit $rc); stopping the job" >&2; exit "$rc"; }
    fi
  done
  running=(${still[@]+"${still[@]}"})
  if [ -n "$server_pid" ] && [ "${#running[@]}" -gt 0 ] && ! kill -0 "$server_pid" 2> /dev/null; then
    echo "[slurm.sh] the vLLM server on $server_node exited; stopping the job" >&2
    exit 1
  fi
  [ "${#running[@]}" -eq 0 ] || sleep 15
done
echo "[slurm.sh] training finished on ${num_machines} node(s)"
