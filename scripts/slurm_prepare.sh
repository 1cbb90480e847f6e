#!/usr/bin/env bash
# Prepare one corpus on many machines: a SLURM job array, one --shard I/N part per array task, all into
# the same prepared folder on a shared file system; then one merge job writes the single manifest.
#
#   sbatch --array=0-31 scripts/slurm_prepare.sh /data/corpus --out /shared/prepared/corpus
#   # when every array task has finished (or chain it: sbatch --dependency=afterok:<array job id> ...):
#   ssl-rad prepare /data/corpus --out /shared/prepared/corpus --merge
#
# The partition is deterministic (chunk c goes to part c mod N), so a failed or pre-empted task is simply
# re-submitted with the same index (--array=7); finished chunks are kept. Every node must use the same key:
# set SSL_RAD_KEY_FILE to a file on the shared file system (prepare refuses parts keyed differently).
# Pass the same options (--image-size, --chunk-files, --modality, ...) to every part and to the merge.
#SBATCH --job-name=ssl-rad-prepare
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=16
#SBATCH --mem=64G
#SBATCH --time=12:00:00
#SBATCH --output=%x-%A_%a.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-.}"
source .venv/bin/activate
: "${SLURM_ARRAY_TASK_ID:?submit as a job array: sbatch --array=0-(N-1) scripts/slurm_prepare.sh SRC --out DIR}"
: "${SSL_RAD_KEY_FILE:?set SSL_RAD_KEY_FILE to a key file every node can read (keys must match across parts)}"
parts=$(( SLURM_ARRAY_TASK_MAX - SLURM_ARRAY_TASK_MIN + 1 ))
part=$(( SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN ))
exec ssl-rad prepare "$@" \
  --shard "${part}/${parts}" \
  --workers "${SLURM_CPUS_PER_TASK:-16}" \
  --no-progress
