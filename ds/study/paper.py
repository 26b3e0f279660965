"""The paper's reported ImageNet results for MobileNetV2-1.4 (Fu et al., ICML 2022; DESIGN.md
section 1), used only as context in figures, never as a result of this study.

Top-1 has three reported values per DS pattern (three finetuning settings of the paper's table);
figures show their range. Speed-ups are the V100 column, fp32, batch 128.
"""
from ds.bench.paper import PAPER_V100_REPORTED_SPEEDUP

PAPER_BASE_TOP1 = 75.30
PAPER_TOP1 = {
    "DS-A": (74.65, 75.29, 75.65),
    "DS-B": (73.67, 74.80, 75.13),
    "DS-C": (73.38, 74.55, 74.91),
    "DS-D": (72.51, 73.93, 74.50),
    "DS-E": (72.20, 73.85, 74.43),
    "DS-F": (67.56, 69.04, 70.13),
}


def paper_points() -> list[dict]:
    """One row per DS pattern: V100 speed-up and the range of top-1 change against the base (pp)."""
    return [{"pattern": name, "speedup": PAPER_V100_REPORTED_SPEEDUP[name],
             "delta_min": min(top1) - PAPER_BASE_TOP1, "delta_max": max(top1) - PAPER_BASE_TOP1}
            for name, top1 in PAPER_TOP1.items()]
