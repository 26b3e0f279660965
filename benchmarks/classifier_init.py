"""The classifier's initialization on a short CIFAR schedule: timm's against ds's (N(0, 0.01)).

    python benchmarks/classifier_init.py        # about 4 minutes on 2 CPU cores

mobilenetv2_035 (CIFAR strides) on 4,000 CIFAR-10 training images at 24 px (the `quick` profile's
base setting: batch 64, lr 0.2, 12 epochs), tested on 1,000, two seeds per initialization. timm
draws a classifier uniformly within +-1/sqrt(num_classes), which for 10 classes starts the logits
with a standard deviation of about 5; `ds.create_model` draws it from N(0, 0.01). Writes
benchmarks/results/classifier_init.csv: one row per initialization, seed and epoch.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import pandas as pd
import torch

from ds import data as ds_data
from ds.study.chapter import loaders
from ds.train import TrainConfig, build_model, fit

OUT = Path(__file__).resolve().parent / "results" / "classifier_init.csv"


def timm_init(classifier: torch.nn.Linear) -> None:
    """What timm's EfficientNet/MobileNetV2 builder does to a Linear classifier."""
    bound = 1.0 / math.sqrt(classifier.out_features)
    torch.nn.init.uniform_(classifier.weight, -bound, bound)
    torch.nn.init.zeros_(classifier.bias)


def main() -> None:
    torch.set_num_threads(2)
    data = ds_data.prepare("cifar10", None, 24, 4000, 1000, 0)
    rows = []
    for seed in (0, 1):
        for init in ("timm", "ds"):
            train_loader, test_loader = loaders(data, 64, torch.device("cpu"), seed)
            torch.manual_seed(seed)
            model = build_model("mobilenetv2_035", 10, 24)
            if init == "timm":
                timm_init(model.get_classifier())
            load = os.getloadavg()[0]
            metrics = fit(model, train_loader, test_loader, TrainConfig(epochs=12, lr=0.2, seed=seed, progress=False)).metrics
            rows.append(metrics.assign(init=init, seed=seed, load_average=load,
                                       date_utc=time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime())))
            last = metrics.iloc[-1]
            print(f"{init:>4} seed {seed}: first-epoch loss {metrics['train_loss'].iloc[0]:.2f}, "
                  f"after 12 epochs train {last['train_acc']:.1f}%, test {last['test_acc']:.1f}%", flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    pd.concat(rows, ignore_index=True).to_csv(OUT, index=False)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
