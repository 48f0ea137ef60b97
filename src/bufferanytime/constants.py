"""Every constant of the method, named once, with its source.

"Paper" is Kuang et al., *Buffer Anytime: Zero-Shot Video Depth and Normal from Image Priors*;
section numbers refer to it.
"""

# --- Training (Sec. 3.1, 4 and 7) ---------------------------------------------------------------
W_REG = 1.0  # weight of the regularization loss, "set to 1 in all experiments" (Sec. 3.1, Eq. 3)
REG_FRAMES_PER_CLIP = 1  # "randomly select one frame ... calculate the regularization loss on this frame only"
LR_DEPTH = 1e-4  # AdamW learning rate for depth (Sec. 4, 7)
LR_NORMAL = 1e-5  # AdamW learning rate for normals (Sec. 4, 7)
WARMUP_STEPS = 1000  # linear warm-up from 0 to the target lr (Sec. 7)
EMA_DECAY = 0.999  # exponential moving average of the weights (Sec. 7)
CLIP_LEN_DEPTH = 110  # maximum sequence length for depth (Sec. 4)
CLIP_LEN_NORMAL = 32  # maximum sequence length for normals (Sec. 4)
DEFERRED_CHUNK = 4  # frames decoded at once in deferred back-propagation (Sec. 3.1, Alg. 1)
TRAIN_STEPS = 20_000  # "approximately one day for 20,000 iterations" (Sec. 4; Sec. 7 says 15,000)
TRAIN_BATCH_PER_PROCESS = 1  # "24 H100 GPUs with a total batch size of 24" (Sec. 4, 7): one clip per GPU
# Not given in the paper (our choices, each a command-line option):
TRAIN_RES_DEPTH = 518  # square training crops at Depth Anything V2's own input size (37 patches of 14)
TRAIN_RES_NORMAL = 512  # square training crops for Marigold (64x64 latents)
TRAIN_MIN_CROP = 0.5  # random crops span between this fraction and all of the largest crop of the target aspect
ADAMW_WEIGHT_DECAY = 1e-2  # AdamW is named (Sec. 7) without a weight decay: PyTorch's default

# --- Stabilization loss (Sec. 3.2, Alg. 2) -------------------------------------------------------
CYCLE_TAU = 0.34  # forward-backward cycle threshold in pixels, log(2)/2 (Sec. 7.2)
EDGE_MANHATTAN_RADIUS = 3  # pixels within this Manhattan distance of a Canny edge are masked (Sec. 3.2)

# --- Architecture (Sec. 3.3) ---------------------------------------------------------------------
DEPTH_NUM_TEMPORAL_BLOCKS = 3  # "we inject three temporal blocks in between the fusion blocks"

# --- Depth Anything V2 preprocessing (official implementation / HF image processor) --------------
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DINOV2_PATCH = 14  # ViT patch size; input sides are multiples of it

# --- Marigold-E2E-FT normals prior (Garcia et al. 2024; github.com/VisualComputingInstitute/diffusion-e2e-ft) ----
# Per-channel signs taking the prior's normals to ours (x right, y up, z towards the camera). E2E-FT is trained on
# and evaluated against DSINE-convention normals without conversion (its DSINE/projects/dsine/test.py), i.e. the
# negated outward normal in OpenCV axes (right, down, forward) = the outward normal in (left, up, backward) axes
# (DSINE README "About the coordinate system", data/d2n/cross.py, RayReLU): only x differs from ours.
MARIGOLD_E2E_FT_AXES = (-1.0, 1.0, 1.0)
MARIGOLD_NORMALS_EPS = 1e-6  # diffusers MarigoldNormalsPipeline.normalize_normals: norm clamped to >= 1e-6

# --- Evaluation (DepthCrafter benchmark protocol) ------------------------------------------------
EVAL_MIN_DEPTH = 1e-3
EVAL_MAX_DEPTH = {"kitti": 80.0, "scannet": 10.0, "bonn": 10.0, "sintel": 70.0}
DELTA1_THRESHOLD = 1.25
NORMAL_ANGLE_THRESHOLDS = (11.25, 22.5, 30.0)
# DepthCrafter benchmark (github.com/Tencent/DepthCrafter, benchmark/eval/eval.py, eval.sh, dataset_extract/*.py)
DISPARITY_EPS = 1e-8  # eval.py: gt disparity = 1 / (gt depth + 1e-8) when fitting scale and shift
EVAL_SEQ_LEN = {"kitti": 110, "scannet": 90, "bonn": 110, "sintel": 50}  # eval.sh --seq_len
KITTI_DEPTH_SCALE = 256.0  # dataset_extract_kitti.py: depth = png / 256, png == 0 -> invalid (-1)
KITTI_FRAMES = (0, 110)  # dataset_extract_kitti.py: start_frame, end_frame
SCANNET_DEPTH_SCALE = 1000.0  # dataset_extract_scannet.py: depth = png / 1000
SCANNET_NUM_SCENES = 100  # first 100 scenes of scans_test, sorted (scene0707_00 ... scene0806_00)
SCANNET_FRAMES, SCANNET_STRIDE = 270, 3  # scene_frames_len = 90 * 3, stride = 3: 90 frames
SCANNET_CROP = (8, 8, 11, 11)  # top, bottom, left, right pixels cut from images and depth ([8:-8, 11:-11])
BONN_DEPTH_SCALE = 5000.0  # dataset_extract_bonn.py: depth = png / 5000, png == 0 -> invalid (-1)
BONN_FRAMES = (30, 140)  # dataset_extract_bonn.py: start_frame, end_frame
BONN_SEQUENCES = (  # csv/meta_bonn.csv: the five sequences of the benchmark
    "rgbd_bonn_synchronous",
    "rgbd_bonn_person_tracking",
    "rgbd_bonn_crowd2",
    "rgbd_bonn_crowd3",
    "rgbd_bonn_balloon2",
)
SINTEL_DPT_TAG = 202021.25  # dataset_extract_sintel.py: float32 tag opening every .dpt depth file
# Synthetic evaluation sets (bufferanytime.synthetic): their sky dome has a radius of at least 60 m and the camera
# stays within a quarter radius of its centre, so the sky lies beyond ~37 m of z-depth; this cap keeps it out.
SYNTHETIC_MAX_DEPTH = 30.0
# Metric depth. Depth Anything V2 Metric (github.com/DepthAnything/Depth-Anything-V2, metric_depth/): the head ends in
# a sigmoid times max_depth, 20 m for the Hypersim (indoor) and 80 m for the Virtual KITTI (outdoor) checkpoints.
METRIC_MAX_DEPTH_OUTDOOR = 80.0
# The embedded metric prior uses the outdoor value: the synthetic world's rooms, objects and near ground lie within
# ~40 m (see SYNTHETIC_MAX_DEPTH); only the sky dome and the ground near the horizon lie beyond, clipped to it.
SYNTHETIC_METRIC_MAX_DEPTH = METRIC_MAX_DEPTH_OUTDOOR
SILOG_LAMBDA = 0.5  # Depth Anything V2 metric_depth/util/loss.py SiLogLoss(lambd=0.5), after Eigen et al. 2014
