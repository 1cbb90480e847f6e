#!/usr/bin/env bash
# Multi-node pre-training on SLURM: one task per GPU; Lightning reads the SLURM environment
# (SLURM_NTASKS, SLURM_PROCID, SLURM_LOCALID, master address) and sets up DDP itself.
#
#   sbatch --nodes=4 scripts/slurm_pretrain.sh --method dino --data radnet --out runs/dino-radnet
#
# Re-submitting the same command resumes from runs/.../checkpoints/last.ckpt (--resume is always passed).
#SBATCH --job-name=ssl-rad-pretrain
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=10
#SBATCH --time=48:00:00
#SBATCH --signal=SIGUSR1@120
#SBATCH --output=%x-%j.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-.}"
source .venv/bin/activate
srun ssl-rad pretrain \
  --devices "${SLURM_NTASKS_PER_NODE:-8}" \
  --num-nodes "${SLURM_JOB_NUM_NODES:-1}" \
  --workers "$(( ${SLURM_CPUS_PER_TASK:-10} - 1 ))" \
  --resume \
  "$@"
