"""How sure a top-1 comparison is: the test set's standard error and the spread over seeds.

A top-1 p (%) measured on n test images has a sampling standard error sqrt(p (100 - p) / n)
points: another test set of the same size would move it by about that much. Networks trained
with different seeds differ by more than that when training is noisy; `Difference` combines both
for the difference of two arms' mean top-1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd


def test_se(top1: float, test_images: int) -> float:
    """Standard error (points) of a top-1 (%) measured on `test_images` images."""
    p = top1 / 100.0
    return 100.0 * math.sqrt(max(p * (1.0 - p), 0.0) / test_images)


@dataclass(frozen=True)
class Difference:
    """Mean top-1 of arm a minus arm b (points), with its uncertainties."""
    a: str
    b: str
    mean_a: float
    mean_b: float
    seeds_a: int
    seeds_b: int
    seed_se: float     # from the seed spread: sqrt(sd_a^2 / n_a + sd_b^2 / n_b)
    test_se: float     # from the test set: the two means, each with the standard error of one evaluation

    @property
    def value(self) -> float:
        return self.mean_a - self.mean_b

    @property
    def se(self) -> float:
        """Both sources together (independent): the uncertainty the verdict uses. With one seed in
        an arm the seed spread is unknown and only the test set's part is left."""
        return self.test_se if math.isnan(self.seed_se) else math.hypot(self.seed_se, self.test_se)

    @property
    def verdict(self) -> str:
        """'a better', 'b better' (the difference is beyond two standard errors) or 'not separated'."""
        if abs(self.value) <= 2 * self.se:
            return "not separated"
        return f"{self.a} better" if self.value > 0 else f"{self.b} better"


def difference(a: pd.Series, b: pd.Series, test_images: int, name_a: str = "a", name_b: str = "b") -> Difference:
    """The difference of the mean top-1 of two sets of runs (one top-1 per seed, in %). With one
    seed in an arm its spread is unknown: the seed part of the uncertainty is then NaN."""
    if len(a) == 0 or len(b) == 0:
        raise ValueError(f"both arms need at least one run (got {len(a)} and {len(b)})")
    spread = (a.var(ddof=1) / len(a) if len(a) > 1 else math.nan) + (b.var(ddof=1) / len(b) if len(b) > 1 else math.nan)
    tests = math.hypot(test_se(a.mean(), test_images), test_se(b.mean(), test_images))
    return Difference(name_a, name_b, float(a.mean()), float(b.mean()), len(a), len(b), math.sqrt(spread), tests)


def gap(base_top1: float, top1: float, test_images: int) -> tuple[float, float]:
    """How far `top1` lies below the base's (points; negative: above) and the standard error of
    that difference, both measured once on the same `test_images`-image test set."""
    return base_top1 - top1, math.hypot(test_se(base_top1, test_images), test_se(top1, test_images))
