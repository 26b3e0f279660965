"""Shared by the training-side tests: a tiny model and a synthetic dataset."""
import pytest
import torch

import ds
from ds.data import fake_dataset

TINY = "mobilenetv2_035"   # the smallest standard-depth MobileNetV2 (19 switches)
TINY_SIZE = 16             # CIFAR strides apply for inputs <= 64 px


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return ds.create_model(TINY, num_classes=10, input_size=TINY_SIZE)


@pytest.fixture
def fake_data():
    return fake_dataset(n_train=128, n_test=64, size=TINY_SIZE, seed=0)
