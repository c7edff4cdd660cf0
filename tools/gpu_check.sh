#!/usr/bin/env bash
# One prepared GPU check: install what is missing, run the CUDA tests, then the benchmarks at
# real sizes, and write everything to one JSON file.
#
#   tools/gpu_check.sh [--out DIR] [--dry-run] [--no-tests]
#
#   --out DIR    where the step logs and gpu_check.json go (default: gpu_check_out)
#   --dry-run    no GPU needed: the CPU runs of the device tests and the same benchmark entry
#                points at tiny sizes (checks the script and its Python entry points)
#   --no-tests   skip the pytest step
#
# Real run (about 8 minutes on one GPU, every step under its own time limit):
#   1. the tests parametrized by the `device` fixture, CUDA runs only (pytest -m cuda), and the
#      torch.compile (inductor) SAM test;
#   2. tools/benchmark.py: ViT-B/16 (random init), SCLIP, short side 336, windows 224 / 112,
#      21 classes, fp32 and bf16, against the reference-style loop;
#   3. tools/benchmark_sam.py: SAM ViT-H (random init) encoder, 32 x 32 automatic proposals,
#      referring and instance pipelines on 480x640 images against segment-anything, bf16.
# Exit status: 0 when every step passed, 1 when one failed (see gpu_check.json), 2 on bad use.
set -uo pipefail

OUT="gpu_check_out"
DRY=0
TESTS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="${2:?--out needs a folder}"; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    --no-tests) TESTS=0; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
mkdir -p "$OUT" || exit 2
OUT="$(cd "$OUT" && pwd)"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 GRADIO_ANALYTICS_ENABLED=False
PYTHON="${PYTHON:-python}"
STEPS="$OUT/steps.tsv"
: > "$STEPS"

# run NAME LIMIT_SECONDS COMMAND...: log to $OUT/NAME.log, record the exit status and seconds
# (a dry run on a shared CPU gets four times the limits: they guard the GPU's time budget)
run() {
  local name="$1" limit="$(( $2 * (DRY ? 4 : 1) ))"
  shift 2
  echo "[gpu_check] $name (limit ${limit} s): $*" >&2
  local start=$SECONDS
  timeout --signal=INT --kill-after=20 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" >> "$STEPS"
  echo "[gpu_check] $name: exit $rc after $((SECONDS - start)) s (log: $OUT/$name.log)" >&2
  tail -n 3 "$OUT/$name.log" >&2
}

# 1. what is missing
if ! "$PYTHON" -c "import torch, open_clip, segment_anything, pytest, ovseg" 2>/dev/null; then
  echo "[gpu_check] installing ovseg with its dev extras" >&2
  run install 300 "$PYTHON" -m pip install -e ".[dev]"
fi
if [ "$DRY" = 0 ]; then
  if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check.sh: torch sees no CUDA GPU here; use --dry-run on a CPU machine." >&2
    exit 2
  fi
  DEVICE=cuda
else
  DEVICE=cpu
fi

# 2. tests on the device (the CUDA parameters of the `device` fixture; their CPU twins dry)
DEVICE_TESTS=(tests/pipelines/test_semantic.py tests/models/decoders/test_sam_speed.py
  tests/test_cli_predict.py)
if [ "$TESTS" = 1 ]; then
  if [ "$DRY" = 0 ]; then
    run tests_cuda 100 "$PYTHON" -m pytest -q -p no:cacheprovider -m cuda "${DEVICE_TESTS[@]}"
    OVSEG_TEST_INDUCTOR=1 run tests_compile 80 "$PYTHON" -m pytest -q -p no:cacheprovider \
      tests/models/decoders/test_sam_speed.py -k compile
  else
    run tests_cpu 300 "$PYTHON" -m pytest -q -p no:cacheprovider -m "not cuda" -k device \
      "${DEVICE_TESTS[@]}"
  fi
fi

# 3. benchmarks (same entry points; tiny sizes when dry)
if [ "$DRY" = 0 ]; then
  SEMANTIC=(--model ViT-B-16 --mode sclip --short-side 336 --crop 224 --stride 112
    --classes 21 --images 8 --repeats 3 --device cuda)
  SAM=(--model vit_h --pretrained none --clip-model ViT-B-16 --sizes 480x640
    --points-per-side 32 --points-per-batch 64 --images 4 --repeats 2 --device cuda
    --precision bf16 --image-batch-size 4)
else
  SEMANTIC=(--model ovseg-ViT-Ti-8 --mode sclip --short-side 64 --crop 32 --stride 16
    --classes 4 --images 2 --repeats 1 --device cpu --threads 1)
  SAM=(--images 1 --image-size 64 --points-per-side 2 --pred-iou-thresh 0
    --stability-score-thresh 0 --repeats 1 --warmup 0 --device cpu --threads 1)
fi
run semantic_fp32 80 "$PYTHON" tools/benchmark.py "${SEMANTIC[@]}" --out "$OUT/semantic_fp32.json"
run semantic_bf16 50 "$PYTHON" tools/benchmark.py "${SEMANTIC[@]}" --precision bf16 \
  --out "$OUT/semantic_bf16.json"
run sam 150 "$PYTHON" tools/benchmark_sam.py "${SAM[@]}" --out "$OUT/sam.json"

# 4. one JSON
"$PYTHON" - "$OUT" "$DEVICE" "$DRY" <<'PY'
import json
import sys
from pathlib import Path

from ovseg.benchmarks.machine import machine_info
from ovseg.fileio import atomic_write_json

out, device, dry = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
steps = {}
for line in (out / "steps.tsv").read_text().splitlines():
    name, rc, seconds = line.split("\t")
    steps[name] = {"exit_status": int(rc), "seconds": int(seconds), "log": f"{name}.log"}
benchmarks = {}
for name in ("semantic_fp32", "semantic_bf16", "sam"):
    path = out / f"{name}.json"
    if path.is_file():
        benchmarks[name] = json.loads(path.read_text())
import torch  # noqa: E402  (after the files: a broken torch still leaves the step records)

report = {
    "dry_run": dry,
    "device": device,
    "machine": machine_info(torch.device(device)),
    "passed": all(step["exit_status"] == 0 for step in steps.values()),
    "steps": steps,
    "speedup": {name: data.get("speedup") for name, data in benchmarks.items()},
    "benchmarks": benchmarks,
}
atomic_write_json(out / "gpu_check.json", report, indent=2)
print(json.dumps({"passed": report["passed"], "speedup": report["speedup"]}, indent=2))
sys.exit(0 if report["passed"] else 1)
PY
