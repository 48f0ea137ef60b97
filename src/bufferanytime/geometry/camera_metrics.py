"""Errors of an estimated camera path against the true one: ATE after a similarity alignment, RPE, rotation.

- ATE: the root mean square of the camera positions' errors after the similarity (scale, rotation, translation)
  that best maps the estimated positions onto the true ones (Umeyama, 1991); relative to the true trajectory's
  length (the sum of its steps) it is scale-free.
- RPE over ``delta`` frames: the error of each relative motion ``inv(P_k) P_{k+delta}``; its translation after the
  alignment's scale, relative to the true step length's mean; its rotation in degrees per frame.
Frames without an estimated pose (NaN) are left out.
"""

from __future__ import annotations

import numpy as np

from bufferanytime.geometry.camera import rotation_deg


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """``(s, R, t)`` minimising ``sum |dst - (s R src + t)|^2`` for point sets ``(N, 3)``."""
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    U, S, Vt = np.linalg.svd(cov)
    D = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[2, 2] = -1
    R = U @ D @ Vt
    var = float((xs**2).sum() / len(src))
    s = float(np.trace(np.diag(S) @ D) / var) if with_scale and var > 0 else 1.0
    return s, R, mu_d - s * R @ mu_s


def trajectory_errors(estimated: np.ndarray, truth: np.ndarray, delta: int = 1) -> dict:
    """ATE, RPE and rotation errors of camera-to-world poses ``(T, 4, 4)`` (both relative to their frame 0)."""
    est = np.asarray(estimated, np.float64)
    gt = np.asarray(truth, np.float64)
    gt = np.linalg.inv(gt[0]) @ gt  # the estimate's world is frame 0's camera
    ok = np.isfinite(est).all(axis=(1, 2))
    steps = np.linalg.norm(np.diff(gt[:, :3, 3], axis=0), axis=1)
    length = float(steps.sum())
    s, R, t = umeyama(est[ok, :3, 3], gt[ok, :3, 3])
    aligned = (s * est[ok, :3, 3] @ R.T) + t
    ate = float(np.sqrt(np.mean(np.sum((aligned - gt[ok, :3, 3]) ** 2, axis=1))))
    rpe_t, rpe_r = [], []
    for k in range(len(est) - delta):
        if not (ok[k] and ok[k + delta]):
            continue
        rel_est = np.linalg.inv(est[k]) @ est[k + delta]
        rel_gt = np.linalg.inv(gt[k]) @ gt[k + delta]
        rpe_t.append(float(np.linalg.norm(s * rel_est[:3, 3] - rel_gt[:3, 3])))
        rpe_r.append(rotation_deg(rel_est[:3, :3].T @ rel_gt[:3, :3]) / delta)
    abs_rot = [rotation_deg(est[k, :3, :3].T @ gt[k, :3, :3]) for k in np.flatnonzero(ok)]
    mean_step = float(steps.mean()) if steps.size else float("nan")
    return {
        "ate": ate,
        "trajectory_length": length,
        "ate_pct_of_length": 100 * ate / length if length > 0 else float("nan"),
        "rpe_trans": float(np.mean(rpe_t)) if rpe_t else float("nan"),
        "rpe_trans_pct_of_step": 100 * float(np.mean(rpe_t)) / mean_step if rpe_t and mean_step > 0 else float("nan"),
        "rpe_rot_deg_per_frame": float(np.mean(rpe_r)) if rpe_r else float("nan"),
        "max_rot_error_deg": float(np.max(abs_rot)) if abs_rot else float("nan"),
        "scale": s,
        "frames_with_pose": int(ok.sum()),
    }
