#!/bin/bash
# An envsnap rerun as a Slurm batch job, written by `envsnap rerun --on slurm`. It runs the run's
# image by digest on the node with the node's container runtime, in the same locked-down
# container a docker rerun uses, and leaves what came back in this job directory, on the
# filesystem the nodes share with the submitting host: store.tar (the container's store),
# exit_code, and stopped (when Slurm signalled the job). envsnap collects them from there.
#SBATCH --job-name=@JOB_NAME@
#SBATCH --output=@OUTPUT@
#SBATCH --chdir=@JOB_DIR@
#SBATCH --ntasks=1
#SBATCH --no-requeue
#SBATCH --export=ALL
@SBATCH_LINES@
set -u
runtime=@RUNTIME@
image=@IMAGE@
pull=@PULL@
name="@CONTAINER@-${SLURM_JOB_ID:-0}"

say() { echo "envsnap-job: $*" >&2; }

# The container's store and exit code, each written whole (a collect may look at any moment).
finish() {
  "$cli" cp "$name:"@STORE@ - > store.tar.part 2>/dev/null && mv store.tar.part store.tar
  "$cli" rm -f "$name" > /dev/null 2>&1
  printf '%s\n' "$1" > exit_code.part && mv exit_code.part exit_code
}

# scancel, the time limit or a preemption: Slurm sends TERM, then KILL after KillWait.
stopped() {
  trap - TERM INT
  printf '%s\n' "$1" > stopped.part && mv stopped.part stopped
  "$cli" stop -t 5 "$name" > /dev/null 2>&1
  finish "$2"
  exit "$2"
}

cli="$(command -v "$runtime")" || {
  say "$runtime is not on this node's PATH"
  printf '127\n' > exit_code.part && mv exit_code.part exit_code
  exit 127
}
# The rerun's recorded environment is read from ENVSNAP_ENV_<NAME> (Slurm brings the submitting
# environment); the runtime finds its own configuration under the job's HOME, not the container's.
export DOCKER_CONFIG="${DOCKER_CONFIG:-${HOME:-/root}/.docker}"
if [ "$pull" = 1 ]; then
  "$cli" pull -q "$image" > /dev/null || {
    say "$runtime could not pull $image on $(hostname)"
    printf '125\n' > exit_code.part && mv exit_code.part exit_code
    exit 125
  }
fi
gpu_flags=()
if [ -n "${SLURM_JOB_GPUS:-}" ]; then
  if [ "$runtime" = podman ]; then
    IFS=, read -r -a gpus <<< "$SLURM_JOB_GPUS"
    for gpu in "${gpus[@]}"; do gpu_flags+=(--device "nvidia.com/gpu=$gpu"); done
  else
    gpu_flags=(--gpus "\"device=$SLURM_JOB_GPUS\"")
  fi
fi
ENVSNAP_ENV_ENVSNAP_RERUN_ENGINE="slurm:${SLURM_JOB_PARTITION:-?} job ${SLURM_JOB_ID:-?} on ${SLURMD_NODENAME:-$(hostname)} ($runtime)"
@ENV_ASSIGNMENTS@ "$cli" create @CREATE_FLAGS@ "${gpu_flags[@]}" "$image" @ARGV@ > /dev/null || {
  say "$runtime could not create the container from $image"
  printf '125\n' > exit_code.part && mv exit_code.part exit_code
  exit 125
}
trap 'stopped TERM 143' TERM
trap 'stopped INT 130' INT
"$cli" cp - "$name:/" < input.tar || {
  say "$runtime could not copy the rerun's files into the container"
  "$cli" rm -f "$name" > /dev/null 2>&1
  printf '125\n' > exit_code.part && mv exit_code.part exit_code
  exit 125
}
"$cli" start --attach "$name" &
wait "$!"
code=$?
trap - TERM INT
finish "$code"
exit "$code"
