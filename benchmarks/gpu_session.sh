#!/usr/bin/env bash
# Everything stablekit measures on a CUDA machine, as one run that fits a short loan of one:
#
#   OUT=/tmp/gpu-out bash benchmarks/gpu_session.sh [PART...]     # parts: env build fast memory cpu text (all)
#
# env     the GPU, driver, torch, and the CPU's bf16 flags
# build   SD-Turbo's and SDXL's architectures with random weights, made on the GPU (seconds, not minutes)
# fast    benchmarks/gpu.py: SDXL 1024^2, 30 steps: plain diffusers vs stablekit's default plan vs --fast
# memory  tests/gpu (marker gpu): each offload strategy's measured CUDA peak against the plan, and --fast's picture,
#         on cores 0-3, while
# cpu     benchmarks/cpu.py on the other cores: the CPU paths (bf16 where the CPU has it, the tiny decoder)
# text    benchmarks/text.py's StableLM-2-1.6B on the GPU (not in the default parts: the loan is short)
# bf16    benchmarks/bf16.py on the CPU: every family at full size in bfloat16, outputs sane (not in the default
#         parts; worth its minutes where the host CPU has AMX / AVX512_BF16: `env` says)
# Each part has its own time limit and its own log section in $OUT/gpu.log; a failing part does not stop the next.
#
# On this project's lent H200 machines (torch 2.11, transformers 5.17, no diffusers, no network) it ran from the
# repository root with wheels downloaded here into an ignored `.whl/` folder (diffusers 0.42.1, importlib_metadata,
# torchsde, trampoline; typer 0.29.2 and pydantic for the `text` part's CLI), carried along, and:
#   pip install --no-index --no-deps --target /tmp/site .whl/*.whl; export PYTHONPATH=/tmp/site:$PWD
#   ln -sfn ../commands stablekit/commands; ln -sfn ../presets stablekit/presets   # what the install maps
#   OUT=$OUT bash benchmarks/gpu_session.sh env build fast memory      # ~7.5 min of the loan
set -u
OUT=${OUT:-/tmp/stablekit-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 STABLEKIT_BUILD_DEVICE=${STABLEKIT_BUILD_DEVICE:-cuda}
export STABLEKIT_MEMORY_WORK=${STABLEKIT_MEMORY_WORK:-/tmp/stablekit-memory}
WORK=$STABLEKIT_MEMORY_WORK
export STABLEKIT_HOME=${STABLEKIT_HOME:-$WORK/home}
LOG=$OUT/gpu.log
PARTS=${*:-env build fast memory}
CORES=$(nproc)
PIN_TESTS="" PIN_CPU=""
if command -v taskset >/dev/null && [ "$CORES" -ge 12 ]; then
    PIN_TESTS="taskset -c 0-3" PIN_CPU="taskset -c 4-$((CORES - 1))"
fi

CPU_BENCH=(python3 benchmarks/cpu.py --parts sd-turbo --runs 1 --work-dir /tmp/stablekit-bench --save "$OUT/cpu.json"
           --variants diffusers-fp32,stablekit-default,stablekit-tiny-decoder,stablekit-served-tiny-decoder)

part() {  # part NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    echo "=== $name: start $(date +%T), limit ${limit}s"
    timeout --kill-after=10 "$limit" "$@"
    local code=$?
    echo "=== $name: exit $code at $(date +%T)"
    return $code
}

for name in $PARTS; do
    case $name in
    env) part env 60 bash -c 'nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv;
        python3 -c "import torch, diffusers, transformers, accelerate; print(torch.__version__, torch.version.cuda,
            diffusers.__version__, transformers.__version__, accelerate.__version__)";
        grep -o -w -E "avx512_bf16|amx_bf16|amx_tile|avx512f" /proc/cpuinfo | sort | uniq -c;
        grep -m1 "model name" /proc/cpuinfo; free -g | head -2' ;;
    build) part build 120 python3 -c "import sys; sys.path.insert(0, 'benchmarks'); import memory;
from pathlib import Path
for arch in ('sdxl', 'sd-turbo'):
    memory.build(arch, Path('$WORK'))" ||
        STABLEKIT_BUILD_DEVICE=cpu part build-on-cpu 240 python3 -c "import sys; sys.path.insert(0, 'benchmarks');
import memory; from pathlib import Path
for arch in ('sdxl', 'sd-turbo'):
    memory.build(arch, Path('$WORK'))" ;;
    fast) part fast 240 python3 benchmarks/gpu.py --work-dir "$WORK" --timeout 200 --save "$OUT/gpu-fast.json" ;;
    memory)
        part memory 220 $PIN_TESTS python3 -m pytest -p no:cacheprovider -m gpu -s -q -o addopts="" \
            tests/gpu/test_memory_gpu.py tests/gpu/test_fast_gpu.py > "$OUT/gpu-tests.log" 2>&1 &
        tests=$!
        if [ -n "$PIN_CPU" ]; then
            OMP_NUM_THREADS=$((CORES - 4)) part cpu 220 $PIN_CPU "${CPU_BENCH[@]}"
        fi
        wait $tests ;;
    cpu) OMP_NUM_THREADS=$CORES part cpu 300 "${CPU_BENCH[@]}" ;;
    bf16) OMP_NUM_THREADS=$CORES part bf16 420 python3 benchmarks/bf16.py --work-dir "$WORK" --timeout 90 \
            --save "$OUT/bf16.json" ;;
    text) part text 150 python3 benchmarks/text.py --models 1.6b --runs 1 --device cuda --dtype bfloat16 \
            --tokens 64 --save "$OUT/text.json" ;;
    *) echo "unknown part: $name" ;;
    esac
done >> "$LOG" 2>&1
cat "$LOG"
