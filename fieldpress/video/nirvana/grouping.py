"""Which frames go together: fixed groups of G frames, or adaptive groups that also start at a scene
cut; and which groups are key groups (coded on their own, not as a residual to the previous one).

A cut is a frame whose mean absolute difference to the previous frame (8-bit units, on a 4x-subsampled
grid) exceeds both `CUT_MIN` and `CUT_FACTOR` x the clip's median difference. Adaptive groups start at
every cut (the group before it ends early) and a cut group is a key group: warm-starting across a cut
still helps the fit, but coding the new scene as a residual of the old would not. The encoder also turns
a group into a key group after fitting when its residual would cost more bits than coding it on its
own (the "rate jump"; `fieldpress.video.nirvana.fit`). Key groups also come every `key_every` groups.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fieldpress.errors import InputError

CUT_MIN = 20.0
CUT_FACTOR = 4.0


@dataclass(frozen=True)
class Group:
    """Frames start..start+length-1, and whether it is a key group (and why: "first", "interval",
    "cut", "rate")."""

    start: int
    length: int
    key: bool
    reason: str = ""


def frame_differences(frames: np.ndarray) -> np.ndarray:
    """(T,) mean absolute difference of each frame to the previous one (0 for the first)."""
    small = frames[:, ::4, ::4].astype(np.float32)
    d = np.zeros(len(frames), np.float64)
    if len(frames) > 1:
        d[1:] = np.abs(small[1:] - small[:-1]).mean(axis=(1, 2, 3))
    return d


def scene_cuts(frames: np.ndarray) -> list[int]:
    """Frame indices that start a new scene (never 0)."""
    d = frame_differences(frames)
    if len(d) < 2:
        return []
    threshold = max(CUT_MIN, CUT_FACTOR * float(np.median(d[1:])))
    return [int(t) for t in np.flatnonzero(d > threshold) if t > 0]


def check_grouping(frames: int, group_size: int, key_every: int) -> None:
    """InputError (one line) for a group size or key interval the clip cannot take."""
    if key_every < 1:
        raise InputError(f"--key-every must be at least 1, got {key_every}")
    if group_size < 1:
        raise InputError(f"--group-size must be at least 1, got {group_size}")
    if group_size > frames:
        raise InputError(f"--group-size {group_size} is larger than the clip ({frames} frames): the clip is "
                         "shorter than one group")


def plan_groups(count: int, group_size: int, key_every: int, cuts: list[int] = ()) -> list[Group]:
    """Groups over `count` frames: G frames each, a new group (and key group) at every cut."""
    check_grouping(count, group_size, key_every)
    cut_set = {c for c in cuts if 0 < c < count}
    groups: list[Group] = []
    start, since_key = 0, 0
    while start < count:
        end = min(start + group_size, count)
        nxt = [c for c in cut_set if start < c < end]
        end = min(nxt) if nxt else end
        if start == 0:
            key, reason = True, "first"
        elif start in cut_set:
            key, reason = True, "cut"
        elif since_key >= key_every:
            key, reason = True, "interval"
        else:
            key, reason = False, ""
        since_key = 1 if key else since_key + 1
        groups.append(Group(start, end - start, key, reason))
        start = end
    return groups
