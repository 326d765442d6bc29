"""Profiles, devices and seeds for the book's chapters and experiments.

Every chapter has a papermill ``parameters`` cell with ``PROFILE``, ``DEVICE`` and ``SEED``
and calls :func:`setup` right after it: ``smoke`` (seconds, for tests), ``book`` (minutes on
2 CPU cores, the default of the HTML book) or ``paper`` (the papers' own sizes).
"""

from __future__ import annotations

import os
import platform
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import numpy as np
import torch

from ._checks import check_choice
from .results import checkout_state

PROFILES = ("smoke", "book", "paper")
DEVICES = ("auto", "cpu", "cuda")
T = TypeVar("T")

__all__ = [
    "PROFILES", "DEVICES", "RunContext", "one_thread_on_cpu", "pick", "resolve_device", "seed_everything", "setup",
]


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"``: CUDA when available, else CPU. ``"cuda"`` without a GPU is an error."""
    check_choice("device", device, DEVICES)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("DEVICE='cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(device)


@contextmanager
def one_thread_on_cpu(device: torch.device | str = "cpu") -> Iterator[None]:
    """Run the block with one intra-op thread when ``device`` is the CPU (restored after): small
    models train fastest that way, and timings do not depend on what else the machine runs."""
    if torch.device(device).type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA) RNGs."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"SEED must be an integer, got {seed!r}")
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    torch.manual_seed(int(seed))


@dataclass(frozen=True)
class RunContext:
    """What a chapter runs with: profile, device, seed, and a description of the hardware."""

    profile: str
    device: torch.device
    seed: int
    started: str

    def hardware(self) -> str:
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores"

    def describe(self) -> str:
        return (
            f"profile={self.profile} | device={self.device} ({self.hardware()}) | seed={self.seed} | "
            f"torch {torch.__version__} | {self.started}"
        )

    def pick(self, **by_profile: T) -> T:
        """The value for this profile: ``ctx.pick(smoke=2, book=10, paper=100)``."""
        return pick(self.profile, **by_profile)


def pick(profile: str, **by_profile: T) -> T:
    """Select a per-profile value; every profile must be given."""
    check_choice("profile", profile, PROFILES)
    missing = [p for p in PROFILES if p not in by_profile]
    if missing:
        raise ValueError(f"pick() needs a value for every profile; missing {missing}")
    return by_profile[profile]


def setup(profile: str, device: str = "auto", seed: int = 0, *, verbose: bool = True) -> RunContext:
    """Validate a chapter's parameters, seed every RNG and report what the chapter runs on."""
    check_choice("PROFILE", profile, PROFILES)
    dev = resolve_device(device)
    seed_everything(seed)
    checkout_state()  # the commit this run starts from, for the provenance of its tables
    ctx = RunContext(profile, dev, int(seed), datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))
    if verbose:
        print(ctx.describe())
    return ctx
