"""Real spherical harmonics up to degree 3 with the constants and sign conventions of the INRIA
3DGS code (and gsplat), so colours match what trained scenes expect: rgb = max(SH(dir) + 0.5, 0)."""

from __future__ import annotations

import torch
from torch import Tensor

C0 = 0.28209479177387814
C1 = 0.4886025119029199
C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154, -0.4570457994644658,
      1.445305721320277, -0.5900435899266435)


def sh_basis(dirs: Tensor, degree: int) -> Tensor:
    """The (M, (degree+1)^2) basis values for unit directions (M,3)."""
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, C0)]
    if degree >= 1:
        out += [-C1 * y, C1 * z, -C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [C2[0] * xy, C2[1] * yz, C2[2] * (2.0 * zz - xx - yy), C2[3] * xz, C2[4] * (xx - yy)]
    if degree >= 3:
        out += [C3[0] * y * (3.0 * xx - yy), C3[1] * xy * z, C3[2] * y * (4.0 * zz - xx - yy),
                C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy), C3[4] * x * (4.0 * zz - xx - yy),
                C3[5] * z * (xx - yy), C3[6] * x * (xx - 3.0 * yy)]
    return torch.stack(out, dim=-1)


def eval_sh(sh_dc: Tensor, sh_rest: Tensor, dirs: Tensor, degree: int) -> Tensor:
    """RGB (M,3) from DC (M,3), rest (M,K,3) and view directions (M,3, any length) up to `degree`."""
    coeffs = (degree + 1) ** 2 - 1
    if coeffs > sh_rest.shape[1]:
        raise ValueError(f"SH degree {degree} needs {coeffs} rest coefficients, scene has {sh_rest.shape[1]}")
    color = C0 * sh_dc
    if degree > 0:
        d = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        basis = sh_basis(d, degree)[:, 1:]  # (M, coeffs)
        color = color + torch.einsum("mk,mkc->mc", basis, sh_rest[:, :coeffs])
    return torch.clamp_min(color + 0.5, 0.0)
