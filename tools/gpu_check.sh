#!/usr/bin/env bash
# One prepared GPU check: the benchmarks at real sizes, then the CUDA tests, all written to one
# JSON file (OUT/gpu_check.json) whatever happens to each step.
#
#   tools/gpu_check.sh [--out DIR] [--dry-run] [--no-tests] [--budget SECONDS] [--install]
#
#   --out DIR         where the step logs and gpu_check.json go (default: gpu_check_out)
#   --dry-run         no GPU needed: every step on the CPU at tiny sizes (checks the script and
#                     its Python entry points)
#   --no-tests        skip the pytest steps
#   --budget SECONDS  wall-clock budget of all steps together (default 430); a step gets at most
#                     what is left of it, and is recorded as skipped when under 10 s are left
#   --install         pip install what is missing first (needs a package index; off by default
#                     because GPU machines are often offline: missing modules are recorded)
#
# Real run (under 8 minutes on one GPU; every step under its own time limit, in this order):
#   1. read:     tools/benchmark_models.py read: a READ-7B-shaped model (LLaMA-7B + CLIP
#                ViT-L/14-336 + SAM ViT-H, random init, built on the GPU in bf16) answering one
#                reasoning query (16 answer tokens, one [SEG] mask); target < 1 s per query;
#   2. detect:   tools/benchmark_models.py detect: OWLv2-B/16 (960 px) boxes, 10 per image, each
#                a SAM ViT-H box prompt, bf16, fused (sdpa) SAM attention, 480x640 images;
#                target < 50 ms per image;
#   3. semantic_fp32 / semantic_bf16: tools/benchmark.py, ViT-B/16 (random init), SCLIP, short
#                side 336, windows 224 / 112, 21 classes, against the reference-style loop;
#   4. sam:      tools/benchmark_sam.py, SAM ViT-H (random init, bf16, fused attention)
#                encoder, 32 x 32 proposals, referring and instance pipelines on 480x640
#                images against segment-anything;
#   5. tests_cuda: the tests parametrized by the `device` fixture, CUDA runs only
#                (pytest -m cuda); tests_compile: the inductor torch.compile SAM test on CUDA.
# Each step's exit status, seconds, JSON result (benchmarks) or the tail of its log (failures)
# goes into gpu_check.json. Exit status: 0 when every step passed, 1 when one failed or was
# skipped, 2 on bad use.
set -uo pipefail

OUT="gpu_check_out"
DRY=0
TESTS=1
BUDGET=430
INSTALL=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="${2:?--out needs a folder}"; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    --no-tests) TESTS=0; shift ;;
    --budget)
      BUDGET="${2:?--budget needs seconds}"; shift 2
      case "$BUDGET" in ''|*[!0-9]*) echo "gpu_check.sh: --budget takes whole seconds" >&2; exit 2 ;; esac ;;
    --install) INSTALL=1; shift ;;
    -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
mkdir -p "$OUT" || exit 2
OUT="$(cd "$OUT" && pwd)"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 GRADIO_ANALYTICS_ENABLED=False
export TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
PYTHON="${PYTHON:-python}"
STEPS="$OUT/steps.tsv"
: > "$STEPS"
STARTED=$SECONDS
# a dry run on a shared CPU gets four times the limits and the budget (they guard GPU time)
SCALE=$(( DRY ? 4 : 1 ))

# run NAME LIMIT_SECONDS COMMAND...: log to $OUT/NAME.log, record exit status and seconds.
# The limit is cut to what is left of the budget; under 10 s left, the step is skipped (-1).
run() {
  local name="$1" limit="$(( $2 * SCALE ))"
  shift 2
  local left=$(( BUDGET * SCALE - (SECONDS - STARTED) ))
  if [ "$left" -lt 10 ]; then
    echo "[gpu_check] $name: skipped, the budget is spent" >&2
    echo "skipped: the ${BUDGET} s budget was spent" > "$OUT/$name.log"
    printf '%s\t%s\t%s\t%s\n' "$name" "-1" "0" "$limit" >> "$STEPS"
    return
  fi
  [ "$limit" -gt "$left" ] && limit="$left"
  echo "[gpu_check] $name (limit ${limit} s): $*" >&2
  local start=$SECONDS
  timeout --signal=INT --kill-after=5 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" "$limit" >> "$STEPS"
  echo "[gpu_check] $name: exit $rc after $((SECONDS - start)) s (log: $OUT/$name.log)" >&2
  tail -n 3 "$OUT/$name.log" >&2
}

# 0. what is there (recorded, never fatal: each step fails on its own if it needs a module)
MODULES="torch transformers open_clip segment_anything pytest numpy"
"$PYTHON" - $MODULES > "$OUT/modules.json" 2>/dev/null <<'PY' || echo '{}' > "$OUT/modules.json"
import importlib, json, sys
found = {}
for name in sys.argv[1:]:
    try:
        module = importlib.import_module(name)
        found[name] = str(getattr(module, "__version__", "present"))
    except Exception as err:  # noqa: BLE001  (record whatever breaks the import)
        found[name] = f"missing: {type(err).__name__}: {err}"
print(json.dumps(found))
PY
if [ "$INSTALL" = 1 ] && grep -q missing "$OUT/modules.json"; then
  run install 120 "$PYTHON" -m pip install -e ".[dev]"
fi
DEVICE=cpu
if [ "$DRY" = 0 ]; then
  if "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" \
    > "$OUT/preflight.log" 2>&1; then
    DEVICE=cuda
  else
    echo "gpu_check.sh: torch sees no CUDA GPU here (see $OUT/preflight.log); use --dry-run" \
      "on a CPU machine." >&2
    printf '%s\t%s\t%s\t%s\n' preflight 1 0 0 >> "$STEPS"
    DEVICE=none
  fi
fi

if [ "$DEVICE" != none ]; then
  # 1-4. benchmarks (same entry points; tiny sizes when dry)
  if [ "$DRY" = 0 ]; then
    READ=(--size 7b --device cuda --precision bf16 --repeats 5)
    DETECT=(--size b16 --device cuda --precision bf16 --images 8 --sizes 480x640 --boxes 10
      --attention sdpa)
    SEMANTIC=(--model ViT-B-16 --mode sclip --short-side 336 --crop 224 --stride 112
      --classes 21 --images 8 --repeats 3 --device cuda)
    SAM=(--model vit_h --pretrained none --clip-model ViT-B-16 --sizes 480x640
      --points-per-side 32 --points-per-batch 64 --images 4 --repeats 2 --device cuda
      --precision bf16 --image-batch-size 4 --attention sdpa)
  else
    READ=(--size tiny --device cpu --precision bf16 --repeats 1 --threads 1)
    DETECT=(--size tiny --device cpu --precision bf16 --images 2 --sizes 48x64 --repeats 1
      --threads 1 --attention sdpa)
    SEMANTIC=(--model ovseg-ViT-Ti-8 --mode sclip --short-side 64 --crop 32 --stride 16
      --classes 4 --images 2 --repeats 1 --device cpu --threads 1)
    SAM=(--images 1 --image-size 64 --points-per-side 2 --pred-iou-thresh 0
      --stability-score-thresh 0 --repeats 1 --warmup 0 --device cpu --threads 1
      --attention sdpa)
  fi
  run read 75 "$PYTHON" tools/benchmark_models.py read "${READ[@]}" --out "$OUT/read.json"
  run detect 60 "$PYTHON" tools/benchmark_models.py detect "${DETECT[@]}" \
    --out "$OUT/detect.json"
  run semantic_fp32 60 "$PYTHON" tools/benchmark.py "${SEMANTIC[@]}" \
    --out "$OUT/semantic_fp32.json"
  run semantic_bf16 40 "$PYTHON" tools/benchmark.py "${SEMANTIC[@]}" --precision bf16 \
    --out "$OUT/semantic_bf16.json"
  run sam 110 "$PYTHON" tools/benchmark_sam.py "${SAM[@]}" --out "$OUT/sam.json"

  # 5. tests on the device (the CUDA parameters of the `device` fixture; their CPU twins dry)
  DEVICE_TESTS=(tests/pipelines/test_semantic.py tests/models/decoders/test_sam_speed.py
    tests/test_cli_predict.py)
  if [ "$TESTS" = 1 ]; then
    if [ "$DRY" = 0 ]; then
      run tests_cuda 60 "$PYTHON" -m pytest -q -p no:cacheprovider -m cuda "${DEVICE_TESTS[@]}"
      # the inductor SAM test on CUDA (Triton kernels; its CPU case builds C++ kernels)
      run tests_compile 75 "$PYTHON" -m pytest -q -p no:cacheprovider -m cuda \
        tests/models/decoders/test_sam_speed.py -k inductor
    else
      run tests_cpu 75 "$PYTHON" -m pytest -q -p no:cacheprovider -m "not cuda" -k device \
        "${DEVICE_TESTS[@]}"
    fi
  fi
fi

# 6. one JSON, with nothing but the standard library (a broken torch still gets its record)
"$PYTHON" - "$OUT" "$DEVICE" "$DRY" "$BUDGET" "$((SECONDS - STARTED))" <<'PY'
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

out, device, dry = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
budget, total = int(sys.argv[4]), int(sys.argv[5])
BENCHMARKS = ("read", "detect", "semantic_fp32", "semantic_bf16", "sam")
TARGETS = {"read": ("seconds_median", 1.0), "detect": ("ms_per_image", 50.0)}


def log_tail(name: str, lines: int = 25) -> str:
    path = out / f"{name}.log"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else ""


steps, benchmarks = {}, {}
for line in (out / "steps.tsv").read_text().splitlines():
    name, rc, seconds, limit = line.split("\t")
    rc = int(rc)
    step = {"exit_status": rc, "seconds": int(seconds), "limit_seconds": int(limit),
            "log": f"{name}.log"}  # fmt: skip
    if rc == -1:
        step["status"] = "skipped (budget spent)"
    elif rc in (124, 137):
        step["status"] = "timed out"
    else:
        step["status"] = "passed" if rc == 0 else "failed"
    result = out / f"{name}.json"
    if name in BENCHMARKS and result.is_file():
        try:
            benchmarks[name] = json.loads(result.read_text())
        except ValueError as err:
            step["error"] = f"unreadable {result.name}: {err}"
    if rc != 0:
        step["log_tail"] = log_tail(name)
    steps[name] = step

summary = {}
for name, data in benchmarks.items():
    if "speedup" in data:
        summary[name] = {"speedup": data["speedup"]}
    if name in TARGETS:
        key, limit = TARGETS[name]
        value = data.get(key)
        met = None if dry else value is not None and value < limit  # tiny sizes: no target
        summary[name] = {key: value, "target": f"< {limit:g}", "met": met}
        if name == "detect":
            summary[name]["stages_ms_per_image"] = {
                stage: info["ms_per_image"] for stage, info in data["stages"].items()
            }
try:
    modules = json.loads((out / "modules.json").read_text())
except (OSError, ValueError):
    modules = {}
gpu = None
try:
    gpu = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
        capture_output=True, text=True, timeout=20,
    ).stdout.strip() or None  # fmt: skip
except (OSError, subprocess.SubprocessError):
    pass
report = {
    "dry_run": dry,
    "device": device,
    "machine": {"platform": platform.platform(), "python": platform.python_version(),
                "cpus": os.cpu_count(), "gpu": gpu, "modules": modules},  # fmt: skip
    "budget_seconds": budget,
    "total_seconds": total,
    "passed": bool(steps) and device != "none" and all(s["exit_status"] == 0 for s in steps.values()),
    "summary": summary,
    "steps": steps,
    "benchmarks": benchmarks,
}
tmp = out / "gpu_check.json.tmp"
tmp.write_text(json.dumps(report, indent=2) + "\n")
os.replace(tmp, out / "gpu_check.json")
print(json.dumps({"passed": report["passed"], "total_seconds": total, "summary": summary}, indent=2))
sys.exit(0 if report["passed"] else 1)
PY
status=$?
[ "$DEVICE" = none ] && exit 2
exit "$status"
