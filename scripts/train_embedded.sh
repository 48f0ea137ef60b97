#!/usr/bin/env bash
# How the embedded `tiny-synthetic` models were made (issue [embedded]); about 5 hours on 2 CPU cores.
# Seeds: priors 10000-10399 (val 90000-90023), video training 20000-20021, 20100-20199, 20200-20299, 20300-20399,
# video validation 60000-60005 (model selection), held-out evaluation 50000-50005, demo 777777.
# Nothing here is needed to use the package: the results ship in src/bufferanytime/weights/.
# The models were made by running these commands one at a time (stage a in resumed pieces, see step 3); the
# script as a whole has been syntax-checked but not re-run end to end.
set -euo pipefail
DATA=${DATA:-data}
RUNS=${RUNS:-runs}
SHARED=${SHARED:-../shared}
TEX="--textures $SHARED/data/frames"

# 1. Synthetic data: single frames for the priors, flickering clips for the video models, held-out clips.
bufferanytime synth -o "$DATA/prior_train" --videos 400 --frames 3 --size 168x224 --seed 10000 $TEX
bufferanytime synth -o "$DATA/prior_val" --videos 24 --frames 2 --size 168x224 --seed 90000 $TEX
bufferanytime synth -o "$DATA/video_train" --videos 22 --frames 24 --size 126x168 --seed 20000 \
    --flicker 0.3 --exposure 0.1 --noise 0.01 $TEX
bufferanytime synth -o "$DATA/video_train2" --videos 100 --frames 24 --size 126x168 --seed 20100 \
    --flicker 0.3 --exposure 0.1 --noise 0.01 $TEX
bufferanytime synth -o "$DATA/video_train3" --videos 100 --frames 24 --size 126x168 --seed 20200 \
    --flicker 0.3 --exposure 0.1 --noise 0.01 $TEX
bufferanytime synth -o "$DATA/video_train4" --videos 100 --frames 24 --size 126x168 --seed 20300 \
    --flicker 0.3 --exposure 0.1 --noise 0.01 $TEX
bufferanytime synth -o "$DATA/video_val" --videos 6 --frames 24 --size 168x224 --seed 60000 \
    --flicker 0.3 --exposure 0.1 --noise 0.01 $TEX
bufferanytime synth -o "$DATA/eval_heldout" --videos 6 --frames 24 --size 168x224 --seed 50000 \
    --flicker 0.3 --exposure 0.1 --noise 0.01 $TEX

# 2. Supervised image priors (run in parallel, one thread each).
bufferanytime train-prior depth --data "$DATA/prior_train" --val "$DATA/prior_val" -o "$RUNS/prior_depth" \
    --steps 3000 --batch-size 8 --threads 1
bufferanytime train-prior normal --data "$DATA/prior_train" --val "$DATA/prior_val" -o "$RUNS/prior_normal" \
    --steps 1200 --batch-size 8 --threads 1

# 3. Zero-shot video training on unlabeled clips, in three stages per model, each continuing from the last with
#    more synthetic clips (the real sample clips are always in). Stage a was itself run in pieces with
#    `--resume --steps N`, which is bit-exact (constant learning rate after warm-up), so it is one run here.
#    Each model's stages are recorded in weights/tiny-synthetic/<kind>/video_training_record.json (where stage a
#    is named video_<kind>).
train_stages() {  # kind prior clip res lr steps_a steps_b steps_c
    local kind=$1 prior=$2 common="--clip-len $3 --res $4 --lr $5 --warmup 30 --ema 0.98 --flow dis \
        --clips-per-video 2 --save-every 50 --copy-prior"
    local data="$DATA/video_train" init=$prior stage steps
    for stage in a b c; do
        case $stage in
            a) steps=$6 ;;
            b) steps=$7; data="$data $DATA/video_train2" ;;
            c) steps=$8; data="$data $DATA/video_train3" ;;
        esac
        # shellcheck disable=SC2086
        bufferanytime train "$kind" --data $data "$SHARED/data" --model "$init" --out "$RUNS/video_${kind}_$stage" \
            --steps "$steps" --cache "$RUNS/cache_${kind}_$stage" $common
        init="$RUNS/video_${kind}_$stage/model"
    done
}
train_stages depth "$RUNS/prior_depth" 10 126x168 2e-4 2500 1200 1000
train_stages normal "$RUNS/prior_normal" 8 96x128 1e-4 1500 800 700

# 4. Pick by OPW on the validation clips (never on eval_heldout), then evaluate on the held-out clips:
for kind in depth normal; do
    bufferanytime eval "$kind" --dataset synthetic --root "$DATA/video_val" --model "$RUNS/video_${kind}_a/model" \
        --model "$RUNS/video_${kind}_b/model" --model "$RUNS/video_${kind}_c/model" --per-frame --flow gt \
        --max-res 224 -o "$RUNS/val_$kind"
done

# 5. Ship: copy the chosen RUNS/video_<kind>_<stage>/model into src/bufferanytime/weights/tiny-synthetic/{depth,normal}.

# 6. The README's held-out table (seeds never used in training or selection):
for kind in depth normal; do
    bufferanytime eval "$kind" --dataset synthetic --root "$DATA/eval_heldout" --model tiny-synthetic --per-frame \
        --flow gt --max-res 224 -o "$RUNS/eval_$kind"
done
