#!/usr/bin/env bash
# The defence study on the smollm2 world, alignment seed 0 (experiments/defence/README.md).
# Every heavy step holds a CPU slot (/work/cpu-slot when present) at one torch thread.
# Usage: experiments/defence/run.sh [step ...]   steps: data val test bench (default: all)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-python}
SLOT=${SLOT-$( [ -x /work/cpu-slot ] && echo /work/cpu-slot || echo )}
W=outputs/worlds/smollm2
DATA=$(ls -d $W/data-*/data | grep -v tmp | head -1)
BASE=$(ls -d $W/base-*/model | head -1)
OUT=outputs/defence
mkdir -p $OUT/data $OUT/runs
COMMON=(model=smollm2_135m_aligned logger=csv threads=1)
PREFILL_COLS="+eval.harmful.local_columns.compliance=compliance"
steps=${*:-data val test bench}

run() {  # run NAME OVERRIDES... : one evaluate into $OUT/runs/NAME (skipped when done)
  local name=$1; shift
  [ -f $OUT/runs/$name/metrics.json ] && { echo "[skip] $name"; return; }
  echo "[run] $name $(date -u +%T)"
  $SLOT $PY -m ssah.evaluate "${COMMON[@]}" "$@" hydra.run.dir=$OUT/runs/$name \
    > $OUT/runs/$name.log 2>&1 || { tail -5 $OUT/runs/$name.log; exit 1; }
  echo "[done] $name $(date -u +%T)"
}

for step in $steps; do case $step in
data)  # the unaligned model's compliant answers: first 24 tokens, HarmBench 100 and validation
  [ -f $OUT/data/harmbench100_prefill.jsonl ] || $SLOT $PY -m ssah.defence.prefill \
    --model $BASE --prompts $DATA/harmful_test.jsonl --limit 100 --tokens 24 \
    --out $OUT/data/harmbench100_prefill.jsonl
  [ -f $OUT/data/val_prefill.jsonl ] || $SLOT $PY -m ssah.defence.prefill \
    --model $BASE --prompts $DATA/harmful_val.jsonl --tokens 24 --out $OUT/data/val_prefill.jsonl
  ;;
val)   # choose action and alpha: prefill k=10 on validation prompts, validation benign prompts
  V=(eval=smollm2_val eval.harmful.local_path=$OUT/data/val_prefill.jsonl "$PREFILL_COLS"
     eval/suites=direct eval.suites.direct=null
     '+eval.suites.prefill={kind:prefill,field:compliance,depths:[10]}' eval/utility=none)
  run val_none "${V[@]}"
  for a in ${ALPHAS:-1}; do
    run val_steer_a$a "${V[@]}" defence=reevaluate defence.steer.alpha=$a
  done
  run val_backtrack_a${BT_ALPHA:-1} "${V[@]}" defence=reevaluate defence.action=backtrack \
    defence.steer.alpha=${BT_ALPHA:-1}
  ;;
test|test_none)  # past tense (64), prefill k=10 (HarmBench first 100 that the unaligned model complied
       # with), over-refusal (71 look-alikes), QA (40), reference PPL (24)
  T=(eval=smollm2 eval.harmful.local_path=$OUT/data/harmbench100_prefill.jsonl "$PREFILL_COLS"
     eval.suites.future_tense=null eval.suites.dan=null eval.suites.gcg=null
     eval.suites.refusal_suppression=null eval.suites.direct=null
     '+eval.suites.prefill={kind:prefill,field:compliance,depths:[10]}')
  [ "$step" = test_none ] && { run test_none "${T[@]}"; continue; }
  run test_none "${T[@]}"
  run test_reevaluate "${T[@]}" defence=reevaluate ${TEST_DEFENCE:-}
  run test_streaming_stop "${T[@]}" defence=streaming_stop
  run test_decide_once "${T[@]}" defence=decide_once
  run test_actadd "${T[@]}" defence=actadd ${ACTADD:-}
  ;;
extra) # HarmBench direct and prefill k=5, 20, without and with the defence
  X=(eval=smollm2 eval.harmful.local_path=$OUT/data/harmbench100_prefill.jsonl "$PREFILL_COLS"
     eval/suites=direct eval/utility=none eval/benign=none
     '+eval.suites.prefill={kind:prefill,field:compliance,depths:[5,20]}')
  run extra_none "${X[@]}"
  run extra_reevaluate "${X[@]}" defence=reevaluate ${TEST_DEFENCE:-}
  ;;
bench) # generation time with / without the monitor (medians of paired runs)
  CAL=$(ls -d $OUT/*/ | grep -v -e data -e runs | head -1)
  ALIGNED=$(ls -d $W/aligned-*/model | head -1)
  $SLOT $PY -m ssah.defence.bench --model $ALIGNED --prompts $DATA/benign_val.jsonl \
    --calibration $CAL --out outputs/bench/defence_monitor.json
  ;;
*) echo "unknown step $step"; exit 2;;
esac; done
