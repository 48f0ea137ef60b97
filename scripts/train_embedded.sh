#!/usr/bin/env bash
# How the embedded `tiny-synthetic` models were made; about 9 hours on 2 CPU cores.
# Seeds: priors 10000-10399 (val 90000-90023), video training 20000-20021, 20100-20199, 20200-20299, 20300-20399,
# video validation 60000-60005 and 61000-61011 (model selection), held-out evaluation 50000-50005 and 51000-51019,
# demo 777777.
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

# 3. Zero-shot video training on unlabeled clips, in stages per model, each continuing from the last, mostly with
#    more synthetic clips (the real sample clips are always in). Stage a was itself run in pieces with
#    `--resume --steps N`, which is bit-exact (constant learning rate after warm-up), so it is one run here.
#    Each model's stages are recorded in weights/tiny-synthetic/<kind>/video_training_record.json (where stage a
#    is named video_<kind>).
CLIPS1="$DATA/video_train"
CLIPS2="$CLIPS1 $DATA/video_train2"
CLIPS3="$CLIPS2 $DATA/video_train3"
CLIPS4="$CLIPS3 $DATA/video_train4"
stage() {  # kind stage init "clip dirs" steps [extra train flags...]; REAL_CLIPS="" leaves the real clips out
    local kind=$1 name=$2 init=$3 clips=$4 steps=$5
    shift 5
    # shellcheck disable=SC2086
    bufferanytime train "$kind" --data $clips ${REAL_CLIPS-"$SHARED/data"} --model "$init" \
        --out "$RUNS/video_${kind}_$name" --steps "$steps" --cache "$RUNS/cache_${kind}_$name" --warmup 30 \
        --ema 0.98 --flow dis --clips-per-video 2 --save-every 100 --keep-checkpoints 20 --copy-prior "$@"
}
DEPTH="--clip-len 10 --res 126x168 --lr 2e-4"
NORMAL="--clip-len 8 --res 96x128 --lr 1e-4"
# shellcheck disable=SC2086
{
    stage depth a "$RUNS/prior_depth" "$CLIPS1" 2500 $DEPTH
    stage depth b "$RUNS/video_depth_a/model" "$CLIPS2" 1200 $DEPTH
    stage depth c "$RUNS/video_depth_b/model" "$CLIPS3" 1000 $DEPTH
    stage depth d "$RUNS/video_depth_c/model" "$CLIPS4" 1200 $DEPTH  # shipped
    stage depth e "$RUNS/video_depth_d/model" "$CLIPS4" 400 $DEPTH --lr 1e-4 --w-reg 3  # not shipped; last --lr wins
    stage normal a "$RUNS/prior_normal" "$CLIPS1" 1500 $NORMAL
    stage normal b "$RUNS/video_normal_a/model" "$CLIPS2" 800 $NORMAL
    stage normal c "$RUNS/video_normal_b/model" "$CLIPS3" 700 $NORMAL
    stage normal d "$RUNS/video_normal_c/model" "$CLIPS4" 1000 $NORMAL --w-reg 0.5
}

# Checkpoint -> loadable model: the run's model directory with the checkpoint's EMA weights.
from_checkpoint() {  # run step out
    mkdir -p "$3"
    cp -r "$1/model/config.json" "$1/model/prior" "$3/"
    cp "$1/checkpoints/step-$(printf %08d "$2")/ema.safetensors" "$3/model.safetensors"
}
from_checkpoint "$RUNS/video_normal_d" 500 "$RUNS/video_normal_d500"
# shellcheck disable=SC2086
stage normal e "$RUNS/video_normal_d500" "$CLIPS4" 700 $NORMAL --w-reg 0.25
from_checkpoint "$RUNS/video_normal_e" 500 "$RUNS/video_normal_e500"  # shipped

# 4. Pick by OPW on the validation clips (never on eval_heldout); each candidate (a stage's final model or a
#    from_checkpoint export) is evaluated the same way, e.g.:
for kind in depth normal; do
    bufferanytime eval "$kind" --dataset synthetic --root "$DATA/video_val" --model "$RUNS/video_${kind}_c/model" \
        --model "$RUNS/video_${kind}_d/model" --per-frame --flow gt --max-res 224 -o "$RUNS/val_$kind"
done

# 5. Ship: copy the chosen model.safetensors (video_depth_d/model, video_normal_e500) into
#    src/bufferanytime/weights/tiny-synthetic/{depth,normal}; the priors there are the ones trained in step 2.

# 6. The held-out table of the README and docs/evaluation.md (seeds never used in training or selection):
for kind in depth normal; do
    bufferanytime eval "$kind" --dataset synthetic --root "$DATA/eval_heldout" --model tiny-synthetic --per-frame \
        --flow gt --max-res 224 -o "$RUNS/eval_$kind"
done

# 7. The metric depth model `tiny-synthetic-metric` (docs/embedded_models.md). A metric prior
#    (sigmoid head times 80 m) fine-tuned from the relative tiny-synthetic prior on the same prior frames' exact
#    z-depth (SILog, lambda 0.5), then zero-shot video training on it, starting from the relative video model's
#    temporal blocks (same fusion width; the neck and head are the metric prior's). The depth objective uses the
#    log-depth losses because the prior is metric (model.task), nothing else changes.
bufferanytime train-prior metric_depth --data "$DATA/prior_train" --val "$DATA/prior_val" -o "$RUNS/prior_metric" \
    --init src/bufferanytime/weights/tiny-synthetic/depth/prior --steps 800 --batch-size 8 --lr 2e-4 --threads 1
python scripts/graft_temporal.py "$RUNS/prior_metric" src/bufferanytime/weights/tiny-synthetic/depth \
    "$RUNS/metric_init"
#    Stages (recorded in weights/tiny-synthetic-metric/depth/video_training_record.json): a = 300 steps with a plain
#    log-L1 regularization (the code of commit 4f12740; stopped, it kept the prior's flicker), then, with the split
#    log-L1 of today's code, b (w_reg 1) from a's step 300, c (w_reg 0.3) from b's step 200, d (w_reg 0.15) from
#    c's step 200; b, c and d ran partly in parallel and were stopped by time; d's step 500 was shipped until e
#    (the clip-level scale anchor) replaced it.
# shellcheck disable=SC2086
{
    stage depth metric_a "$RUNS/metric_init" "$CLIPS1" 300 $DEPTH
    from_checkpoint "$RUNS/video_depth_metric_a" 300 "$RUNS/metric_a300"
    stage depth metric_b "$RUNS/metric_a300" "$CLIPS1" 560 $DEPTH
    from_checkpoint "$RUNS/video_depth_metric_b" 200 "$RUNS/metric_b200"
    stage depth metric_c "$RUNS/metric_b200" "$CLIPS1" 876 $DEPTH --w-reg 0.3
    from_checkpoint "$RUNS/video_depth_metric_c" 200 "$RUNS/metric_c200"
    stage depth metric_d "$RUNS/metric_c200" "$CLIPS1" 586 $DEPTH --w-reg 0.15
    from_checkpoint "$RUNS/video_depth_metric_d" 500 "$RUNS/metric_d500"
    # e: the clip-level scale anchor of today's code (MetricDepthTask.clip_scale_loss), from d's step 500
    stage depth metric_e "$RUNS/metric_d500" "$CLIPS1" 600 $DEPTH --w-reg 0.15
    from_checkpoint "$RUNS/video_depth_metric_e" 600 "$RUNS/metric_e600"  # shipped until f
    # f: a weaker pull to the prior, now that the inference scale anchor holds each window's scale; four runs from
    #    e's shipped model (w_reg 0.15 and 0.1 for 800 steps, 0.08 and 0.05 for 600), OMP_NUM_THREADS=1, two at once
    stage depth metric_f "$RUNS/metric_e600" "$CLIPS1" 600 $DEPTH --w-reg 0.08
    from_checkpoint "$RUNS/video_depth_metric_f" 600 "$RUNS/metric_f600"  # shipped until g
    # g: the 3D stabilization loss on the synthetic clips' exact poses (the real sample clips have none, so they are
    #    left out), from f's shipped model; a control run with --stabilization flow on the same clips, two at once
    REAL_CLIPS="" stage depth metric_g "$RUNS/metric_f600" "$CLIPS1" 600 $DEPTH --w-reg 0.08 --stabilization 3d
    from_checkpoint "$RUNS/video_depth_metric_g" 600 "$RUNS/metric_g600"  # shipped until h
    # h: a weaker pull to the prior with the 3D loss; two runs from g (w_reg 0.05 and 0.03), two at once
    REAL_CLIPS="" stage depth metric_h "$RUNS/metric_g600" "$CLIPS1" 600 $DEPTH --w-reg 0.05 --stabilization 3d
    from_checkpoint "$RUNS/video_depth_metric_h" 600 "$RUNS/metric_h600"  # shipped
}
# Stage e was selected on 12 other validation videos (the share of videos whose median depth stays within
# 0.95-1.05x the prior's, then OPW); its figures on 20 more held-out videos were measured once. Stage f was selected
# on those 12, 6 of 64 frames (seed 61100, --frames 64) and 20 more (seed 62000), by the sets on which it meets both
# targets (>= 90 % within, OPW <= 0.5x), then AbsRel; held out once on 50000-50005, 54000-54019 and 55000-55019.
# Stage g was selected on the same three sets by the same rule (against f and its control run); held out once on
# 50000-50005, 56000-56019 and 57000-57019; stage h likewise, against g and w_reg 0.03, held out once on
# 50000-50005, 58000-58019 and 59000-59019.
bufferanytime synth -o "$DATA/video_val2" --videos 12 --frames 24 --size 168x224 --seed 61000 \
    --flicker 0.3 --exposure 0.1 --noise 0.01 $TEX
bufferanytime synth -o "$DATA/eval_heldout2" --videos 20 --frames 24 --size 168x224 --seed 51000 \
    --flicker 0.3 --exposure 0.1 --noise 0.01 $TEX
# Select on the validation clips (median depth ratio to the prior, OPW, AbsRel with --align none), e.g.:
bufferanytime eval depth --dataset synthetic --root "$DATA/video_val" --model "$RUNS/metric_d500" \
    --per-frame --flow gt --max-res 224 -o "$RUNS/val_metric"
# Ship: the prior into weights/tiny-synthetic-metric/depth/prior, the chosen model.safetensors and config.json
# beside it. Held-out figures (docs/embedded_models.md), once:
bufferanytime eval depth --dataset synthetic --root "$DATA/eval_heldout" --model tiny-synthetic-metric --per-frame \
    --flow gt --max-res 224 -o "$RUNS/eval_metric"

# 8. The causal models `tiny-synthetic-causal` (docs/embedded_models.md, "Causal models"): the
#    shipped bidirectional video models turned causal (`--causal`: every temporal weight kept, positions become
#    rotary, each frame sees itself and the H-1 frames before it; H = the clip length), then zero-shot training
#    with the same losses on the same clips (video_train + video_train2 + the real clips), with
#    OMP_NUM_THREADS=1. Checkpoints every 100 steps, exported with scripts/export_checkpoint.py.
causal() {  # kind steps [extra train flags...]
    local kind=$1 steps=$2
    shift 2
    # shellcheck disable=SC2086
    bufferanytime train "$kind" --data $CLIPS2 "$SHARED/data" --model tiny-synthetic --out "$RUNS/causal_$kind" \
        --steps "$steps" --cache "$RUNS/cache_causal_$kind" --warmup 30 --ema 0.98 --flow dis --clips-per-video 2 \
        --save-every 100 --keep-checkpoints 20 --causal "$@"
}
# Planned 1000 depth and 500 normal steps; with other jobs on the 2 cores depth was first stopped after checkpoint 400
# and normals after step 178 (resumed at step 100 with --save-every 50 for finer checkpoints).
# shellcheck disable=SC2086
{
    causal depth 1000 $DEPTH --horizon 10
    causal normal 500 $NORMAL --horizon 8 --w-reg 0.25  # the last stage's w_reg of the shipped normal model
}
# Select by OPW of the streamed model (`--online stream`, exact) on the validation clips only, among checkpoints
# whose validation accuracy is no worse than the prior's (shipped: depth 100, normal 150):
for ckpt in depth/100 depth/200 depth/300 depth/400 normal/100 normal/150; do
    kind=${ckpt%/*} step=${ckpt#*/}
    python scripts/export_checkpoint.py "$kind" "$RUNS/causal_$kind" "$step" "$RUNS/causal_${kind}_$step"
    bufferanytime eval "$kind" --dataset synthetic --root "$DATA/video_val" --model "$RUNS/causal_${kind}_$step" \
        --online stream --flow gt --max-res 224 -o "$RUNS/val_causal_${kind}_$step"
done
# Then, on a quiet machine, the runs resumed to their planned lengths, one depth variant with more regularization
# from checkpoint 300, and validation widened to 18 videos (60000-60017; docs/embedded_models.md, "The planned
# training, finished"):
#   runs/stream/train.sh depth --resume --steps 1000 $DEPTH --horizon 10
#   runs/stream/train.sh normal --resume --steps 500 $NORMAL --horizon 8 --w-reg 0.25 --save-every 50
#   bufferanytime train depth ... --model CAUSAL_DEPTH_300 --causal $DEPTH --horizon 10 --w-reg 2 --steps 400
#   bufferanytime synth -o "$DATA/video_val18" --videos 18 --frames 24 --size 168x224 --seed 60000 (flags as video_val)
#   each checkpoint: bufferanytime eval KIND --root "$DATA/video_val18" --model CKPT --online stream --flow gt --max-res 224
# Depth rule: the lowest validation AbsRel among checkpoints with validation OPW <= 0.45x the prior's (step 500); its
# held-out figures were worse than step 100's on both metrics, so step 100 stayed shipped.
# Ship: weights/tiny-synthetic-causal/KIND/{config.json, model.safetensors}, config "prior" pointing at
# ../../tiny-synthetic/KIND/prior (the same prior, not a copy). Held-out figures, once: the per-frame prior, the
# bidirectional model offline and over a rolling window of past frames, the causal model streamed. (For normals
# the rolling row was run separately, after the others, with the same command without --per-frame.)
# eval_online ROOT PREFIX: the rows above for depth and normals on the videos in ROOT
eval_online() {
    for kind in depth normal; do
        bufferanytime eval "$kind" --dataset synthetic --root "$1" --model tiny-synthetic --per-frame \
            --online rolling --flow gt --max-res 224 -o "$RUNS/${2}_bidirectional_$kind"
        bufferanytime eval "$kind" --dataset synthetic --root "$1" --model tiny-synthetic-causal \
            --online stream --flow gt --max-res 224 -o "$RUNS/${2}_causal_$kind"
    done
}
eval_online "$DATA/eval_heldout" eval

# 9. A fresh test set, planned in docs/embedded_models.md before it was generated, because the six
# held-out videos had been used to choose between shipped models. Measured once, shipped models unchanged.
bufferanytime synth -o "$DATA/eval_test18" --videos 18 --frames 24 --size 168x224 --seed 70000 \
    --flicker 0.3 --exposure 0.1 --noise 0.01 $TEX
eval_online "$DATA/eval_test18" test18
