"""A tiny, deterministic fit used by the resume (SIGKILL) and DDP (torchrun) tests as a subprocess.

    python tests/helpers/tiny_fit.py OUTPUT [--resume] [--sleep S] [--epochs N] [--batch B]
        [--status DIR] [--every STEPS]

Writes the final weights to OUTPUT.weights.safetensors (rank 0; other ranks add .rankN). With
--status DIR each rank writes its pid to DIR/started.rankN at its first step and writes its exit code
(fieldpress's mapping: 130 on Ctrl-C) to DIR/exit.rankN.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from fieldpress.engine import FitConfig, Fitter, Stage, StepInfo, seed_everything


class Points:
    """64 points of a smooth 2-D function: the items the Fitter batches over."""

    def __init__(self, n: int = 64) -> None:
        g = torch.Generator().manual_seed(1234)
        self.x = torch.rand(n, 2, generator=g) * 2 - 1
        self.y = torch.sin(3 * self.x[:, :1]) * torch.cos(2 * self.x[:, 1:])

    def __len__(self) -> int:
        return len(self.x)

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"x": self.x[indices], "y": self.y[indices]}


class RatedMLP(nn.Sequential):
    """The MLP with a rate for "rd" stages: an L1 penalty (in "bits") on the middle layer's weights."""

    def rate_bits(self, info: StepInfo) -> torch.Tensor:
        return self[3].weight.abs().sum()


def make_model(seed: int = 0, dropout: float = 0.0, rated: bool = False) -> nn.Module:
    """A small MLP; dropout draws from the global RNG, which exercises RNG restore on resume.
    `rated`: the same MLP (same weights) with `rate_bits`, for "rd" stages."""
    seed_everything(seed)
    cls = RatedMLP if rated else nn.Sequential
    return cls(nn.Linear(2, 32), nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, 32), nn.ReLU(),
               nn.Linear(32, 1))


def make_loss(sleep: float = 0.0, started: Path | None = None):
    def loss_fn(model: nn.Module, batch: dict[str, torch.Tensor]):
        if started is not None and not started.exists():
            started.write_text(str(os.getpid()))
        if sleep:
            time.sleep(sleep)
        mse = ((model(batch["x"]) - batch["y"]) ** 2).mean()
        return mse, {"psnr": -10 * torch.log10(mse.detach().clamp_min(1e-12))}

    return loss_fn


def run(output: Path | None, *, resume: bool = False, sleep: float = 0.0, epochs: int = 6, batch: int = 8,
        every_steps: int | None = 5, stages: list[Stage] | None = None, dropout: float = 0.1,
        rated: bool = False, started: Path | None = None) -> nn.Module:
    """Fit the tiny MLP (two fit stages unless `stages` are given) and return it."""
    model = make_model(dropout=dropout, rated=rated)
    stages = stages or [Stage("fit", epochs, 1e-2, warmup=0.2), Stage("fit", 2, 2e-3, schedule="constant")]
    config = FitConfig(batch_size=batch, seed=7, checkpoint_every_s=3600, checkpoint_every_steps=every_steps,
                       grad_clip=1.0)
    Fitter(model, Points(), make_loss(sleep, started), config, stages, output=output,
           signature={"epochs": epochs, "batch": batch}, show_progress=False).run(resume=resume)
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("output", type=Path)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--status", type=Path, default=None)
    parser.add_argument("--every", type=int, default=5, help="checkpoint every STEPS steps (0: never)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rank = int(os.environ.get("RANK", "0"))
    started = args.status / f"started.rank{rank}" if args.status else None
    model = run(args.output, resume=args.resume, sleep=args.sleep, epochs=args.epochs, batch=args.batch,
                dropout=args.dropout, every_steps=args.every or None, started=started)
    suffix = ".weights.safetensors" if rank == 0 else f".weights.rank{rank}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(args.output) + suffix)
    return 0


if __name__ == "__main__":
    from fieldpress.cli import run_command

    code = run_command(main)
    if "--status" in sys.argv:
        folder = Path(sys.argv[sys.argv.index("--status") + 1])
        (folder / f"exit.rank{os.environ.get('RANK', '0')}").write_text(str(code))
    sys.exit(code)
