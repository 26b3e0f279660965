"""How far a merged network's bf16 output strays from float32: the basis of ds.export's bf16 tolerance.

    PYTHONPATH=. python benchmarks/bf16_error.py > benchmarks/bf16_error.txt

Random weights (seed 0), random N(0, 1) input batch of 2, torch on CPU: the merged network in
bfloat16 against the same network in float32; relative error = max |bf16 - fp32| / max |fp32|.
"""
import torch

import ds
from ds.provenance import utc_now

print(f"# {utc_now()}, torch {torch.__version__}")
print("model,input,pattern,max_rel_bf16_vs_fp32")
for name, size in (("mobilenetv2_035", 32), ("mobilenetv2_140", 224)):
    torch.manual_seed(0)
    model = ds.create_model(name, num_classes=1000, input_size=size).eval()
    for pattern in ("base", "DS-E", "DS-F"):
        shrunk = model if pattern == "base" else ds.apply_pattern(model, pattern)
        merged = ds.merge(shrunk, input_size=size)
        x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            ref = ds.merge(shrunk, input_size=size)(x)
            out = merged.to(torch.bfloat16)(x.to(torch.bfloat16)).float()
        rel = ((out - ref).abs().max() / ref.abs().max()).item()
        print(f"{name},{size},{pattern},{rel:.3e}", flush=True)
