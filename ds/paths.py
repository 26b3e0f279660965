"""Get and replace submodules by their dotted path ("blocks.1.0.bn1.act")."""
from torch import nn


def get_module(model: nn.Module, path: str) -> nn.Module:
    return model.get_submodule(path) if path else model


def set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    if not path:
        raise ValueError("cannot replace the root module; give the path of a submodule")
    parent_path, _, name = path.rpartition(".")
    setattr(get_module(model, parent_path), name, module)
