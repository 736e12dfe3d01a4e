"""Count reduction by merging (the idea of NanoGS, arXiv 2603.16103, and splat-transform's decimation):
nearby, similar Gaussians are replaced pairwise by one moment-matched Gaussian, instead of dropping
the least significant ones as pruning does.

Each round pairs every Gaussian with its cheapest neighbour among its k nearest (a KD-tree on the
means), keeps the mutual pairs (disjoint by construction), and merges the cheapest of them. Pair cost
= mass x (squared distance in units of the pair's size + colour difference): small, faint, close and
alike pairs go first. A merge keeps the pair's first two moments (weights w = opacity x area):
mean = sum w mu / W, covariance = sum w (Sigma + d d^T) / W; colour and SH are w-averaged; opacity is
the pair's union, diluted by the growth in area (alpha = min(a+b-ab, (w_a+w_b)/area)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fieldpress.errors import InputError


@dataclass(frozen=True)
class MergeConfig:
    """Neighbours searched per Gaussian, the share of the remaining merges done per round, colour weight."""

    neighbours: int = 8
    round_fraction: float = 0.5
    colour_weight: float = 1.0
    max_rounds: int = 64
    mass: str = "significance"  # pair weight in the cost: rendered "significance" or "area" (opacity x area)
    opacity: str = "diluted"  # merged opacity: "diluted" (union, capped by area growth) or "union"


def _covariances(scales: torch.Tensor, quats: torch.Tensor) -> torch.Tensor:
    """(N,3,3) R diag(exp(2s)) R^T in float64."""
    from fieldpress.scenes.renderer import quat_to_rotmat

    rot = quat_to_rotmat(quats.double())
    return rot @ torch.diag_embed(torch.exp(2.0 * scales.double())) @ rot.transpose(1, 2)


def rotmat_to_quat(rot: torch.Tensor) -> torch.Tensor:
    """(N,3,3) proper rotations -> (N,4) unit wxyz quaternions (Shepperd's method, vectorised)."""
    m = rot
    trace = m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2]
    cands = torch.stack([
        torch.stack([1 + trace, m[:, 2, 1] - m[:, 1, 2], m[:, 0, 2] - m[:, 2, 0],
                     m[:, 1, 0] - m[:, 0, 1]], 1),
        torch.stack([m[:, 2, 1] - m[:, 1, 2], 1 + m[:, 0, 0] - m[:, 1, 1] - m[:, 2, 2],
                     m[:, 0, 1] + m[:, 1, 0], m[:, 0, 2] + m[:, 2, 0]], 1),
        torch.stack([m[:, 0, 2] - m[:, 2, 0], m[:, 0, 1] + m[:, 1, 0],
                     1 - m[:, 0, 0] + m[:, 1, 1] - m[:, 2, 2], m[:, 1, 2] + m[:, 2, 1]], 1),
        torch.stack([m[:, 1, 0] - m[:, 0, 1], m[:, 0, 2] + m[:, 2, 0], m[:, 1, 2] + m[:, 2, 1],
                     1 - m[:, 0, 0] - m[:, 1, 1] + m[:, 2, 2]], 1),
    ], 1)  # (N, 4 candidates, 4): candidate c has its c-th component largest when chosen
    diag = torch.stack([trace, m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]], 1)
    best = diag.argmax(1)
    q = cands[torch.arange(len(m)), best]
    return q / q.norm(dim=1, keepdim=True).clamp_min(1e-30)


def _gaussian_from_cov(cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-scales (N,3), wxyz quaternions (N,4)) of symmetric covariances (N,3,3)."""
    eigval, eigvec = torch.linalg.eigh(cov)
    flip = torch.linalg.det(eigvec) < 0
    eigvec[flip, :, 0] = -eigvec[flip, :, 0]  # a proper rotation
    scales = 0.5 * torch.log(eigval.clamp_min(1e-30))
    return scales, rotmat_to_quat(eigvec)


def _pair_costs(scene: Any, scores: np.ndarray, neighbours: np.ndarray, dists: np.ndarray,
                cfg: MergeConfig) -> np.ndarray:
    """(N,k) cost of merging each Gaussian with each of its neighbours."""
    size2 = np.exp(2.0 * scene.scales.double().numpy()).mean(1)  # mean squared extent
    if cfg.mass == "significance":
        mass = scores / max(float(scores.mean()), 1e-30)
    else:
        alpha = torch.sigmoid(scene.opacities.double()).numpy()
        mass = alpha * np.exp(scene.scales.double().numpy()).prod(1) ** (2.0 / 3.0)
    colour = scene.sh_dc.double().numpy()
    geom = dists ** 2 / (size2[:, None] + size2[neighbours] + 1e-30)
    dcol = ((colour[:, None, :] - colour[neighbours]) ** 2).sum(-1)
    return (mass[:, None] + mass[neighbours]) * (geom + cfg.colour_weight * dcol)


def _mutual_pairs(scene: Any, scores: np.ndarray, cfg: MergeConfig) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint (i, j) pairs of mutual cheapest neighbours, cheapest first, and their costs."""
    from scipy.spatial import cKDTree

    pts = scene.means.double().numpy()
    k = min(cfg.neighbours, len(pts) - 1)
    dists, idx = cKDTree(pts).query(pts, k + 1)
    dists, idx = dists[:, 1:].reshape(len(pts), k), idx[:, 1:].reshape(len(pts), k)
    costs = _pair_costs(scene, scores, idx, dists, cfg)
    choice = costs.argmin(1)
    best = idx[np.arange(len(pts)), choice]
    best_cost = costs[np.arange(len(pts)), choice]
    i = np.arange(len(pts))
    mutual = (best[best] == i) & (i < best)
    pairs = np.stack([i[mutual], best[mutual]], 1)
    order = np.argsort(best_cost[mutual], kind="stable")
    return pairs[order], best_cost[mutual][order]


def merge_pairs(scene: Any, pairs: np.ndarray, scores: np.ndarray,
                union: bool = False) -> tuple[Any, np.ndarray]:
    """The scene with each (i, j) of `pairs` replaced by one moment-matched Gaussian; scores summed."""
    a = torch.from_numpy(pairs[:, 0])
    b = torch.from_numpy(pairs[:, 1])
    alpha = torch.sigmoid(scene.opacities.double())
    area = torch.exp(scene.scales.double()).prod(1) ** (2.0 / 3.0)
    w = alpha * area + 1e-30
    wa, wb = w[a], w[b]
    total = wa + wb
    fa, fb = (wa / total)[:, None], (wb / total)[:, None]
    means = scene.means.double()
    mu = fa * means[a] + fb * means[b]
    cov = _covariances(scene.scales, scene.quats)
    da, db = means[a] - mu, means[b] - mu
    merged_cov = (fa[:, :, None] * (cov[a] + da[:, :, None] * da[:, None, :])
                  + fb[:, :, None] * (cov[b] + db[:, :, None] * db[:, None, :]))
    scales, quats = _gaussian_from_cov(merged_cov)
    new_area = torch.exp(scales).prod(1) ** (2.0 / 3.0)
    either = alpha[a] + alpha[b] - alpha[a] * alpha[b]
    diluted = torch.minimum(either, total / new_area.clamp_min(1e-30))
    new_alpha = (either if union else diluted).clamp(1e-6, 1 - 1e-6)
    merged = {
        "means": mu, "scales": scales, "quats": quats, "opacities": torch.logit(new_alpha),
        "sh_dc": fa * scene.sh_dc.double()[a] + fb * scene.sh_dc.double()[b],
        "sh_rest": fa[:, :, None] * scene.sh_rest.double()[a] + fb[:, :, None] * scene.sh_rest.double()[b],
    }
    keep = np.ones(scene.n, bool)
    keep[pairs.ravel()] = False
    rest = scene.subset(torch.from_numpy(keep))
    heavier = torch.where(wa >= wb, a, b).numpy()  # extras (per-Gaussian file properties) from the heavier
    fields = {k: torch.cat([getattr(rest, k), v.to(torch.float32)]) for k, v in merged.items()}
    extras = {k: np.concatenate([v[keep], v[heavier]]) for k, v in scene.extras.items()}
    new_scores = np.concatenate([scores[keep], scores[pairs[:, 0]] + scores[pairs[:, 1]]])
    return scene.replace(**fields, extras=extras), new_scores


def merge_scene(scene: Any, target: int, scores: np.ndarray | None = None,
                config: MergeConfig = MergeConfig()) -> tuple[Any, np.ndarray]:
    """Merge pairs until `target` Gaussians remain; returns the scene and per-Gaussian scores (summed)."""
    if target < 1:
        raise InputError(f"cannot merge down to {target} Gaussians")
    scene = scene.detach().to("cpu")
    scores = np.ones(scene.n) if scores is None else np.asarray(scores, np.float64)
    for _ in range(config.max_rounds):
        need = scene.n - target
        if need <= 0 or scene.n < 2:
            break
        pairs, _ = _mutual_pairs(scene, scores, config)
        if not len(pairs):
            break
        take = min(need, max(1, int(np.ceil(len(pairs) * config.round_fraction))))
        scene, scores = merge_pairs(scene, pairs[:take], scores, config.opacity == "union")
    if scene.n > target:  # too few mergeable pairs left: the least significant go
        keep = np.sort(np.argsort(-scores, kind="stable")[:target])
        scene, scores = scene.subset(torch.from_numpy(keep)), scores[keep]
    return scene, scores
