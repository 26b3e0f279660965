"""Figures reported in the DepthShrinker paper (Fu et al., ICML 2022, Table: MobileNetV2-1.4,
ImageNet, fp32, batch 128, PyTorch on an NVIDIA V100). Reported values, copied from the paper
(DESIGN.md section 1); used only for the comparison column of our tables, never as a result.
"""

# paper, V100, reported: images/s and speed-up over the unshrunk MobileNetV2-1.4
PAPER_V100_REPORTED_IMG_S = {
    "base": 2127, "DS-A": 3827, "DS-B": 4778, "DS-C": 4597, "DS-D": 5560, "DS-E": 5317,
    "DS-F": 10804,
}
PAPER_V100_REPORTED_SPEEDUP = {
    "base": 1.00, "DS-A": 1.80, "DS-B": 2.25, "DS-C": 2.16, "DS-D": 2.61, "DS-E": 2.50,
    "DS-F": 5.08,
}
# the paper's table is for this model only
PAPER_MODEL = "mobilenetv2_140"
