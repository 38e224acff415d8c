#!/usr/bin/env bash
# Verification runs of issue 10 (docs/EVALUATION.md): on qwen2.5-coder-0.5b-instruct,
# no modulation / self modulation / L-Cross from smollm2-135m-instruct (a map fitted on
# pairs held out of the source vector: it does not interpolate), each steered at its
# calibrated beta, with side effects. Every step is cached in the result store, so an
# interrupted run resumes where it stopped.
#
#   scripts/eval/verify.sh [refusal survival-instinct corrigible-neutral-HHH harm fair emotion]
#
# LIMIT (default 50) caps the evaluation prompts; OUT (default results/eval) holds the
# vectors, maps and reports.
set -euo pipefail
cd "$(dirname "$0")/../.."
L=${LCROSS:-target/release/lcross}
D=${LCROSS_DATA:-../shared/data}
OUT=${OUT:-results/eval}
N=${LIMIT:-50}
S=smollm2-135m-instruct; SL=12
T=qwen2.5-coder-0.5b-instruct; TL=14
mkdir -p "$OUT"
parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(refusal survival-instinct corrigible-neutral-HHH harm fair emotion)

# Native and transferred vectors of one concept. $1 name, $2 --dataset, $3 extra extract
# flags, $4 pairs for the vector (the map is fitted on the next $4 pairs).
vectors() {
  local c=$1 ds=$2 flags=$3 n=$4
  [ -f "$OUT/$c.self.safetensors" ] || $L extract -m $T -d "$ds" -l $TL --limit "$n" $flags -o "$OUT/$c.self.safetensors"
  [ -f "$OUT/$c.src.safetensors" ] || $L extract -m $S -d "$ds" -l $SL --limit "$n" $flags -o "$OUT/$c.src.safetensors"
  [ -f "$OUT/$c.T.safetensors" ] || $L align --source $S --source-layer $SL --target $T --target-layer $TL --corpus "$ds" --skip "$n" --limit "$n" -o "$OUT/$c.T.safetensors"
  [ -f "$OUT/$c.lcross.safetensors" ] || $L transfer --vector "$OUT/$c.src.safetensors" --map "$OUT/$c.T.safetensors" -o "$OUT/$c.lcross.safetensors"
}

# Calibrate both vectors with the given metric flags (stored in the vector files).
calibrate_both() {
  local c=$1; shift
  for v in self lcross; do
    $L calibrate -m $T --vector "$OUT/$c.$v.safetensors" "$@" --json > "$OUT/$c.$v.calibration.json" || echo "no admissible beta for $c.$v (see $OUT/$c.$v.calibration.json)"
  done
}

for part in "${parts[@]}"; do
  case $part in
    refusal|survival-instinct|corrigible-neutral-HHH|sycophancy|myopic-reward|hallucination|coordinate-other-ais)
      vectors "$part" "$D/caa/$part/generate_dataset.json" "--balance-letters" 128
      calibrate_both "$part" --metric ab -d "$D/caa/$part/test_dataset_ab.json" --betas 1,2,4,8,16
      $L eval open-ended -m $T -d "$D/caa/$part/test_dataset_open_ended.json" --concept "$part" \
        --vector "$OUT/$part.self.safetensors" --vector "$OUT/$part.lcross.safetensors" --betas 0,auto --limit "$N" \
        --out "$OUT/$part.open-ended" --json > "$OUT/$part.open-ended.json" ;;
    harm)
      vectors harmfulness harmfulness "--method pca" 64
      calibrate_both harmfulness --metric harm --betas=-16,-8,-4,4,8,16 --limit 20
      $L eval harm -m $T --vector "$OUT/harmfulness.self.safetensors" --vector "$OUT/harmfulness.lcross.safetensors" --betas 0,auto --limit "$N" \
        --out "$OUT/harm" --json > "$OUT/harm.json" ;;
    fair)
      vectors fairness fairness "--method pca" 64
      # lower is fairer (the paper's reading); dev and test vignettes on disjoint seeds
      calibrate_both fairness --metric fair --direction decrease --betas 2,4,8,16 --limit 20
      $L eval fair -m $T --vector "$OUT/fairness.self.safetensors" --vector "$OUT/fairness.lcross.safetensors" --betas 0,4,8,auto --samples "$N" \
        --out "$OUT/fair" --json > "$OUT/fair.json" ;;
    emotion)
      for e in happiness fear; do
        vectors $e $e "--method pca" 64
        calibrate_both $e --metric emotion --emotion $e --betas 2,4,8,16 --limit 20
        $L eval emotion --emotion $e -m $T --vector "$OUT/$e.self.safetensors" --vector "$OUT/$e.lcross.safetensors" --betas 0,auto --limit "$N" \
          --out "$OUT/$e" --json > "$OUT/$e.json"
      done ;;
    *) echo "unknown part $part" >&2; exit 2 ;;
  esac
done
