"""Fitting a student scene to a teacher scene's renders through the Fitter: LightGaussian's SH
distillation (student at a lower SH degree, pseudo-views on 2 of every 3 steps) and the recovery
fine-tune after pruning (same machinery, no pseudo-views). The input scene is the teacher, so no
training images are needed.

Loss (LightGaussian / 3DGS): (1 - 0.2) * L1 + 0.2 * (1 - SSIM) between student and teacher renders.
Pseudo-views move the camera centre by N(0, (0.05 x scene scale)^2) per axis, rotation unchanged
(`gaussian_poses(..., std_dev_translation=0.05, std_dev_rotation=0)` in the released scripts).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fieldpress.engine.checkpoint import checkpoint_dir
from fieldpress.errors import InputError

LAMBDA_SSIM = 0.2
ATTRIBUTES = ("means", "scales", "quats", "opacities", "sh_dc", "sh_rest")
# 3DGS learning rates per attribute (means scaled by the scene extent), the Stage lr multiplies them.
BASE_LR = {"means": 1.6e-5, "scales": 5e-3, "quats": 1e-3, "opacities": 2.5e-2, "sh_dc": 2.5e-3,
           "sh_rest": 2.5e-3 / 20}


@dataclass(frozen=True)
class TeacherFitConfig:
    """One student-teacher fit: steps, trained attributes, pseudo-views, resolution."""

    steps: int = 300
    trainable: tuple[str, ...] = ("sh_dc", "sh_rest", "scales", "quats")
    pseudo_views: bool = True  # 2 of every 3 steps on jittered views
    jitter: float = 0.05  # std of the camera-centre jitter, in units of the scene scale
    lr: float = 1.0  # multiplier of BASE_LR
    width: int = 256  # training render width (height keeps the camera aspect)
    seed: int = 0
    description: str = "distill"

    def validate(self) -> None:
        if self.steps < 0:
            raise InputError(f"fine-tune steps must be >= 0, got {self.steps}")
        unknown = set(self.trainable) - set(ATTRIBUTES)
        if unknown:
            raise InputError(f"unknown trainable attributes: {', '.join(sorted(unknown))}")


class SceneModel(nn.Module):
    """A GaussianScene as an nn.Module: trained attributes are Parameters, the others buffers."""

    def __init__(self, scene: Any, trainable: Sequence[str]) -> None:
        super().__init__()
        self.template = scene.detach()
        self.trainable = tuple(trainable)
        for name in ATTRIBUTES:
            value = getattr(self.template, name).detach().clone()
            if name in self.trainable and value.numel():
                setattr(self, name, nn.Parameter(value))
            else:
                self.register_buffer(name, value)

    def scene(self) -> Any:
        """The current scene (tensors share storage with the module, gradients flow)."""
        return self.template.replace(**{name: getattr(self, name) for name in ATTRIBUTES})


def scene_scale(scene: Any) -> float:
    """Half the diagonal of the robust (2..98 percentile) bounds: the unit of jitter and position lr."""
    lo, hi = scene.bounds(2.0)
    return max(0.5 * float(torch.linalg.norm(hi - lo)), 1e-6)


def jitter_camera(camera: Any, offset: Tensor) -> Any:
    """The camera moved by `offset` (world units), same orientation."""
    w2c = camera.world_to_camera.clone()
    w2c[:3, 3] = w2c[:3, 3] - w2c[:3, :3] @ offset.to(w2c.dtype)
    return dataclasses.replace(camera, world_to_camera=w2c, name=f"{camera.name}+jitter")


def camera_tensor(cam: Any) -> Tensor:
    """A camera as 22 floats (world-to-camera 4x4, fx, fy, cx, cy, width, height), so a batch can hold it."""
    intrinsics = torch.tensor([cam.fx, cam.fy, cam.cx, cam.cy, cam.width, cam.height], dtype=torch.float32)
    return torch.cat([cam.world_to_camera.reshape(-1), intrinsics])


def camera_from_tensor(t: Tensor) -> Any:
    """The Camera that `camera_tensor` packed (a fine-tune's loss unpacks its batch with it)."""
    from fieldpress.scenes.cameras import Camera

    t = t.detach().cpu()
    fx, fy, cx, cy, w, h = (float(v) for v in t[16:22])
    return Camera(t[:16].reshape(4, 4), fx=fx, fy=fy, cx=cx, cy=cy, width=int(round(w)), height=int(round(h)))


class TeacherViews:
    """DataSource of (camera, teacher image) items: the given views, and with `pseudo_views` two
    jittered copies of each (index % 3 != 0), re-drawn at every use and rendered from the teacher."""

    def __init__(self, teacher: Any, cameras: Sequence[Any], config: TeacherFitConfig) -> None:
        if not cameras:
            raise InputError("fitting to a teacher needs at least one camera")
        self.teacher = teacher.detach()
        self.cameras = list(cameras)
        self.config = config
        self.scale = scene_scale(self.teacher)
        self.images = [self._render(cam) for cam in self.cameras]
        self.calls = 0

    def _render(self, cam: Any) -> Tensor:
        from fieldpress.scenes.renderer import render

        with torch.no_grad():
            rgb, _ = render(self.teacher, cam, cam.width, cam.height)
        return rgb.detach().to("cpu", torch.float32)

    def __len__(self) -> int:
        return len(self.cameras) * (3 if self.config.pseudo_views else 1)

    def batch(self, indices: Tensor) -> dict[str, Tensor]:
        cams, images = [], []
        for i in indices.reshape(-1).tolist():
            i = int(i)
            if self.config.pseudo_views:
                cam = self.cameras[i // 3]
                if i % 3:
                    gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + self.calls * 7919 + i)
                    offset = torch.randn(3, generator=gen) * (self.config.jitter * self.scale)
                    cam = jitter_camera(cam, offset)
                    image = self._render(cam)
                else:
                    image = self.images[i // 3]
            else:
                cam, image = self.cameras[i], self.images[i]
            cams.append(camera_tensor(cam))
            images.append(image)
            self.calls += 1
        return {"camera": torch.stack(cams), "image": torch.stack(images)}


def teacher_loss(model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Any]]:
    """(1 - 0.2) L1 + 0.2 (1 - SSIM) of the student render against the teacher image, batch mean."""
    assert isinstance(model, SceneModel)
    return render_views_loss(model.scene(), batch)


ExtraTerm = Callable[[Tensor, Tensor, Any], Tensor]


def render_views_loss(scene: Any, batch: dict[str, Tensor],
                      extra: ExtraTerm | None = None) -> tuple[Tensor, dict[str, Any]]:
    """Render `scene` at each camera of `batch`: (1 - 0.2) L1 + 0.2 (1 - SSIM) against its image, plus
    `extra(rgb, target, camera)` when given; the batch mean and its PSNR (the fine-tunes' one loss)."""
    from pytorch_msssim import ssim

    from fieldpress.scenes.renderer import render

    losses, mses = [], []
    for cam_t, target in zip(batch["camera"], batch["image"]):
        cam = camera_from_tensor(cam_t)
        rgb, _ = render(scene, cam, cam.width, cam.height)
        target = target.to(rgb.device)
        l1 = (rgb - target).abs().mean()
        win = 11 if min(cam.width, cam.height) > 11 else 3
        s = ssim(rgb.permute(2, 0, 1)[None], target.permute(2, 0, 1)[None], data_range=1.0, win_size=win)
        term = (1 - LAMBDA_SSIM) * l1 + LAMBDA_SSIM * (1 - s)
        losses.append(term if extra is None else term + extra(rgb, target, cam))
        mses.append(((rgb.detach().clamp(0, 1) - target) ** 2).mean())
    loss = torch.stack(losses).mean()
    mse = torch.stack(mses).mean().clamp_min(1e-12)
    return loss, {"loss": loss.detach(), "psnr": -10.0 * torch.log10(mse)}


@dataclasses.dataclass(frozen=True)
class StageCheckpoint:
    """Where a fine-tune checkpoints (`<output>.ckpt/`), whether it resumes from there (only when that
    checkpoint exists), an extra step interval, and what a resume must match (flags, input)."""

    output: Path
    resume: bool = False
    every_steps: int | None = None
    signature: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def fit_to_teacher(student: Any, teacher: Any, cameras: Sequence[Any], config: TeacherFitConfig,
                   device: torch.device | str = "cpu", show_progress: bool = False,
                   checkpoint: StageCheckpoint | None = None) -> tuple[Any, dict[str, Any]]:
    """Train the student's `config.trainable` attributes to reproduce the teacher's renders.

    Returns the trained scene (detached, CPU) and a report (steps, seconds, final loss/PSNR).
    With `checkpoint` the Fitter checkpoints every 60 s (and every `every_steps`) and resumes exactly.
    """
    from fieldpress.engine import FitConfig, Fitter, Stage

    config.validate()
    if config.steps == 0 or student.n == 0:
        return student, {"steps": 0, "seconds": 0.0}
    views = [c.scaled(config.width) if c.width != config.width else c for c in cameras]
    data = TeacherViews(teacher.to("cpu"), views, config)
    model = SceneModel(student.to("cpu"), config.trainable)
    extent = scene_scale(teacher)

    def groups(module: nn.Module, lr: float) -> list[dict[str, Any]]:
        out = []
        for name, param in module.named_parameters():
            base = BASE_LR[name] * (extent if name == "means" else 1.0)
            out.append({"params": [param], "lr": lr * base, "name": name})
        return out

    fit = FitConfig(batch_size=1, seed=config.seed, device=str(device), steps_per_epoch=config.steps,
                    description=config.description, log_every=1,
                    checkpoint_every_s=math.inf if checkpoint is None else 60.0,
                    checkpoint_every_steps=None if checkpoint is None else checkpoint.every_steps)
    stages = [Stage(kind="fit", epochs=1, lr=config.lr, schedule="cosine", min_lr_ratio=0.1)]
    output = None if checkpoint is None else checkpoint.output
    signature = None if checkpoint is None else {"config": dataclasses.asdict(config), **checkpoint.signature}
    fitter = Fitter(model, data, teacher_loss, fit, stages, output=output, param_groups=groups,
                    show_progress=show_progress, signature=signature)
    resume = checkpoint is not None and checkpoint.resume and checkpoint_dir(checkpoint.output).is_dir()
    result = fitter.run(resume=resume)
    trained = result.model.scene() if isinstance(result.model, SceneModel) else model.scene()
    report = {"steps": int(result.steps), "seconds": round(float(result.seconds), 3)}
    if result.stages:
        last = result.stages[-1]
        for key in ("loss", "psnr"):
            if key in last:
                report[key] = last[key]
    return trained.detach().to("cpu"), report


def distill_sh(scene: Any, teacher: Any, degree: int, cameras: Sequence[Any], config: TeacherFitConfig,
               device: torch.device | str = "cpu", show_progress: bool = False,
               checkpoint: StageCheckpoint | None = None) -> tuple[Any, dict[str, Any]]:
    """LightGaussian SH distillation: truncate to `degree`, then fit to the teacher's renders."""
    if not 0 <= degree <= 3:
        raise InputError(f"SH degree must be 0-3, got {degree}")
    student = scene.with_sh_degree(min(degree, scene.sh_degree))
    if student.sh_degree == teacher.sh_degree:
        return student, {"steps": 0, "seconds": 0.0, "note": "degree unchanged"}
    trainable = tuple(a for a in config.trainable if not (a == "sh_rest" and student.sh_degree == 0))
    return fit_to_teacher(student, teacher, cameras, dataclasses.replace(config, trainable=trainable),
                          device, show_progress, checkpoint)
