#!/usr/bin/env bash
# Rehearse the paper run on this machine before booking GPUs (README: "Rehearse before you book
# GPUs"): write the local stand-ins for every download (python -m refine.rehearsal), start a
# single-node SLURM (tools/slurm_local.sh), and run config/paper.yaml's DAG at tiny size
# (config/rehearsal.yaml) through the cluster profile's CPU twin (profiles/rehearsal). Extra
# arguments go to snakemake (e.g. --config results_dir=/tmp/r). SLURM keeps running afterwards
# (`sacct` lists the jobs); `tools/slurm_local.sh stop` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE="${REFINE_SLURM_STATE:-/tmp/refine-slurm}"
start=$(date +%s)
python -m refine.rehearsal results/rehearsal/assets
bash tools/slurm_local.sh start "$STATE"
export SLURM_CONF="$STATE/etc/slurm.conf"
snakemake all --profile profiles/rehearsal --configfile config/rehearsal.yaml "$@"
sacct -X -o JobID,Comment%70,State,ExitCode,Elapsed
echo "rehearsal finished in $(($(date +%s) - start)) s (SLURM still up: tools/slurm_local.sh stop \"$STATE\")"
