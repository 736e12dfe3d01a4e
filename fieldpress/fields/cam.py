"""CAM: coordinate-aware modulation (Lee, Rho, Nam, Ko, Park; ICLR 2024).

Interface, for image fields and for a video decoder's modulation slot::

    cam = CAM(coord_dims, grid_shape, channels=1)   # e.g. CAM(2, (32, 32)) or CAM(1, (30,), channels=C)
    h = cam(h, coords)                               # then apply the activation

* ``h`` is (N, C) (coordinate MLPs: one feature vector per point) or (B, C, H, W) (conv decoders).
* ``coords`` are in [0, 1]: (N, coord_dims) for (N, C) features, (B, coord_dims) for (B, C, H, W)
  features (one coordinate per sample, e.g. the frame time t).
* Output: ``gamma(x) * Norm(h) + beta(x)``. Norm is LayerNorm without affine over C for (N, C)
  (CAM's ``instance_norm`` over each point's features) and InstanceNorm without affine over H x W
  for (B, C, H, W) (FFNeRV/CAM's ``GroupNorm(C, C)``). ``norm=False`` skips it.
* ``gamma, beta`` come from one learned grid of shape ``(*grid_shape, 2, channels)`` sampled with
  n-linear interpolation, corners aligned (``align_corners=True``) and clamped at the border;
  ``channels`` is 1 (a scalar pair shared by every feature) or C (one pair per channel).
  Initialised to gamma = 1, beta = 0 so the module starts as a plain normalisation.
* Train the grids at 10x the base learning rate: pass :func:`cam_param_groups` to the Fitter.
Its grid is an ordinary parameter (``grid``), so it counts toward parameter budgets and is
quantized with the weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CAM", "cam_param_groups", "CAM_LR_FACTOR"]

CAM_LR_FACTOR = 10.0


class CAM(nn.Module):
    """gamma(x) * Norm(h) + beta(x) with gamma, beta interpolated from a small coordinate grid."""

    def __init__(
        self, coord_dims: int, grid_shape: Sequence[int], channels: int = 1, norm: bool = True
    ) -> None:
        super().__init__()
        grid_shape = tuple(int(g) for g in grid_shape)
        if coord_dims < 1 or len(grid_shape) != coord_dims:
            raise ValueError(f"grid_shape needs one size per coordinate dim ({coord_dims}), got {grid_shape}")
        if min(grid_shape) < 1 or channels < 1:
            raise ValueError("grid sizes and channels must be positive")
        self.coord_dims = coord_dims
        self.grid_shape = grid_shape
        self.channels = channels
        self.norm = norm
        init = torch.zeros(*grid_shape, 2, channels)
        init[..., 0, :] = 1.0
        self.grid = nn.Parameter(init)
        strides = [1] * coord_dims
        for k in range(coord_dims - 2, -1, -1):
            strides[k] = strides[k + 1] * grid_shape[k + 1]
        self.register_buffer("_strides", torch.tensor(strides, dtype=torch.int64), persistent=False)
        self.register_buffer("_sizes", torch.tensor(grid_shape, dtype=torch.int64), persistent=False)

    def extra_repr(self) -> str:
        return f"coord_dims={self.coord_dims}, grid_shape={self.grid_shape}, channels={self.channels}"

    def sample(self, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """gamma, beta at ``coords`` (M, coord_dims) in [0, 1]: each (M, channels)."""
        if coords.dim() != 2 or coords.shape[1] != self.coord_dims:
            raise ValueError(f"coords must be (M, {self.coord_dims}), got {tuple(coords.shape)}")
        sizes = self._sizes.to(coords.device)
        strides = self._strides.to(coords.device)
        pos = coords.clamp(0.0, 1.0) * (sizes - 1).to(coords.dtype)  # align_corners=True, border
        lo = torch.floor(pos).long().clamp(max=(sizes - 2).clamp(min=0))
        frac = pos - lo.to(pos.dtype)
        table = self.grid.reshape(-1, 2 * self.channels)
        out = torch.zeros(coords.shape[0], 2 * self.channels, dtype=table.dtype, device=coords.device)
        for corner in range(1 << self.coord_dims):
            bits = torch.tensor([(corner >> k) & 1 for k in range(self.coord_dims)], device=coords.device)
            if bool(((bits == 1) & (sizes == 1)).any()):
                continue  # a size-1 axis has a single knot: only the lower corner exists
            idx = ((lo + bits) * strides).sum(-1)
            w = torch.where(bits.bool(), frac, 1.0 - frac).prod(-1)
            out = out + w[:, None] * table[idx]
        gamma, beta = out[:, : self.channels], out[:, self.channels :]
        return gamma, beta

    def forward(self, h: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        if h.dim() == 2:
            if coords.shape[0] != h.shape[0]:
                raise ValueError("coords need one row per feature row")
            hn = F.layer_norm(h, h.shape[-1:]) if self.norm else h
            gamma, beta = self.sample(coords)
            return gamma * hn + beta
        if h.dim() == 4:
            if coords.shape[0] != h.shape[0]:
                raise ValueError("coords need one row per sample in the batch")
            hn = F.instance_norm(h) if self.norm else h
            gamma, beta = self.sample(coords)
            return gamma[:, :, None, None] * hn + beta[:, :, None, None]
        raise ValueError(f"CAM expects (N, C) or (B, C, H, W) features, got {tuple(h.shape)}")


def cam_param_groups(model: nn.Module, lr: float, factor: float = CAM_LR_FACTOR) -> list[dict]:
    """Optimizer groups: every CAM grid at ``factor * lr`` (CAM's 10x), everything else at ``lr``."""
    cam_ids = {id(p) for m in model.modules() if isinstance(m, CAM) for p in m.parameters()}
    cam = [p for p in model.parameters() if id(p) in cam_ids and p.requires_grad]
    rest = [p for p in model.parameters() if id(p) not in cam_ids and p.requires_grad]
    groups = [{"params": rest, "lr": lr}]
    if cam:
        groups.append({"params": cam, "lr": lr * factor})
    return groups
