#!/usr/bin/env bash
# How the embedded `tiny-synthetic` models were made (issue [embedded]); about 2 hours on 2 CPU cores.
# Seeds: priors 10000-10399 (val 90000-90023), video training 20000-20021, held-out evaluation 50000-50005,
# demo 777777. Nothing here is needed to use the package: the results ship in src/bufferanytime/weights/.
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
bufferanytime synth -o "$DATA/eval_heldout" --videos 6 --frames 24 --size 168x224 --seed 50000 \
    --flicker 0.3 --exposure 0.1 --noise 0.01 $TEX

# 2. Supervised image priors (run in parallel, one thread each).
bufferanytime train-prior depth --data "$DATA/prior_train" --val "$DATA/prior_val" -o "$RUNS/prior_depth" \
    --steps 3000 --batch-size 8 --threads 1
bufferanytime train-prior normal --data "$DATA/prior_train" --val "$DATA/prior_val" -o "$RUNS/prior_normal" \
    --steps 1200 --batch-size 8 --threads 1

# 3. Zero-shot video training on unlabeled clips: the synthetic flickering clips and the real sample clips.
#    The shipped runs were made in stages (depth 300 -> 1000 -> 2500 steps, normals 300 -> 700 -> 1500) with
#    `--resume --steps N`; resuming is bit-exact and the learning rate is constant after warm-up, so one run
#    with the final step count is the same run.
bufferanytime train depth --data "$DATA/video_train" "$SHARED/data" --model "$RUNS/prior_depth" \
    --out "$RUNS/video_depth" --steps 2500 --clip-len 10 --res 126x168 --lr 2e-4 --warmup 30 --ema 0.98 \
    --flow dis --clips-per-video 2 --cache "$RUNS/cache_depth" --save-every 50 --copy-prior
bufferanytime train normal --data "$DATA/video_train" "$SHARED/data" --model "$RUNS/prior_normal" \
    --out "$RUNS/video_normal" --steps 1500 --clip-len 8 --res 96x128 --lr 1e-4 --warmup 30 --ema 0.98 \
    --flow dis --clips-per-video 2 --cache "$RUNS/cache_normal" --save-every 50 --copy-prior

# 4. Ship: copy RUNS/video_{depth,normal}/model into src/bufferanytime/weights/tiny-synthetic/{depth,normal}.
