"""The DepthShrinker paper's published facts (Fu et al., ICML 2022), in one place.

Everything here is *reported* by the paper for MobileNetV2-1.4 on ImageNet, never a result of this
project: the activation patterns DS-A..F, the top-1 of each, and the throughput on an NVIDIA V100
(fp32, batch 128, PyTorch; timed there on random stand-in weights). Tables and figures use these
only as the comparison column beside our own measurements. docs/design.md says where each comes
from in the paper.
"""

# The network the paper's tables are for.
PAPER_MODEL = "mobilenetv2_140"

# Activation patterns over the 19 switches of MobileNetV2-1.4 (index 0 stem, 1 the expansion-1
# block, 2..17 the inverted-residual blocks, 18 head); 1 keeps the activation, 0 removes it.
PAPER_PATTERNS = {
    "DS-A": (0, 1, 0, 0, 1, 1, 0, 1, 0, 1, 0, 1, 1, 0, 1, 1, 1, 1, 1),
    "DS-B": (1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 1, 1, 0, 1, 1, 1, 1, 1),
    "DS-C": (1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 1, 0, 1, 1, 1, 1, 1),
    "DS-D": (0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1),
    "DS-E": (0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1),
    "DS-F": (1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1),
}

# Speed-up over the unshrunk MobileNetV2-1.4 on a V100 (fp32, batch 128).
PAPER_V100_REPORTED_SPEEDUP = {
    "base": 1.00, "DS-A": 1.80, "DS-B": 2.25, "DS-C": 2.16, "DS-D": 2.61, "DS-E": 2.50,
    "DS-F": 5.08,
}

# ImageNet top-1 (%): the base, and three values per pattern (the paper's three finetuning
# settings); figures show their range.
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
