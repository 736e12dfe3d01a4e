"""fieldpress.cuda: GPU kernels (Triton) with a plain-PyTorch twin for each, chosen by device.

Every op `<op>` dispatches CUDA tensors to its Triton kernel when triton imports, and everything
else to `<op>_ref`; `FIELDPRESS_KERNELS=ref` forces the references. Triton is imported lazily.
"""

from .fake_quant import fake_quantize, fake_quantize_with_rate
from .fake_quant_ref import fake_quantize_ref, fake_quantize_with_rate_ref
from .hashgrid_op import hashgrid
from .hashgrid_ref import HashGridSpec, hashgrid_ref
from .vq import vq_assign, vq_update
from .vq_ref import vq_assign_ref, vq_update_ref

__all__ = [
    "fake_quantize",
    "fake_quantize_ref",
    "fake_quantize_with_rate",
    "fake_quantize_with_rate_ref",
    "hashgrid",
    "hashgrid_ref",
    "HashGridSpec",
    "vq_assign",
    "vq_assign_ref",
    "vq_update",
    "vq_update_ref",
]
