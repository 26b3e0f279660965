"""python -m ds.convert FILE [--out NEW]: rewrite a file of an older ds in the data-only format.

Older versions of ds wrote two kinds of files that hold Python objects, not only data, and so
can be read only by unpickling them, which runs whatever code the file names:
  - the study's merged networks (chapter 4's networks/, the published *-merged.pt): whole
    pickled modules;
  - ds.train checkpoints, whose RNG state held numpy's state tuple (an ndarray).
Every reader of ds now refuses such files. This command is the one place in ds that reads a file
with weights_only=False: it TRUSTS ITS INPUT, so run it only on files you or this project made.
It writes the form every reader accepts: a module becomes a network file (its weights and its
NetInfo; `ds.load_network` rebuilds the module), a checkpoint keeps its entries as plain data.

The result is checked before it replaces anything: a network file is loaded back with
`ds.load_network` and its outputs compared with the module's on random input (they must agree
within ds.MERGE_TOLERANCE); a checkpoint is read back as data with its tensors equal.
Without --out, FILE is replaced (atomically). When FILE has a provenance record beside it
(FILE.provenance.json), the output's record gets the new sha256 and the old one under "converted".

Exit codes: 0 converted, or nothing to convert; 2 an error (one line).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ds.merging import MERGE_TOLERANCE, verify
from ds.meta import NetInfo, info
from ds.networks import load_network, save_network
from ds.provenance import file_sha256, utc_now
from ds.train.checkpoint import (CONVERT_COMMAND, CheckpointError, UnsafeCheckpoint, check_published_hash,
                                 load_checkpoint, provenance_path, save_checkpoint)
from ds.train.rng import numpy_state_as_data


class ConvertError(RuntimeError):
    """A file this command cannot convert; the message says why."""


def as_data(value):
    """`value` with every object an older ds stored replaced by plain data: NetInfo records by
    their dicts, numpy arrays by tensors, numpy scalars by numbers, paths by strings, numpy's RNG
    state tuple by `numpy_state_as_data`. Anything else that is not plain is left for
    save_checkpoint to refuse."""
    if isinstance(value, NetInfo):
        return value.as_dict()
    if isinstance(value, np.ndarray) and not value.dtype.hasobject:
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {key: numpy_state_as_data(item) if key == "numpy" and _is_numpy_rng(item) else as_data(item)
                for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(as_data(item) for item in value)
    return value


def _is_numpy_rng(value) -> bool:
    return isinstance(value, tuple) and len(value) == 5 and value[0] == "MT19937"


def _network_file(module: nn.Module, source: Path, tmp: Path) -> str:
    """Write `module` as a network file at `tmp`, check it against the module; what was done."""
    record = info(module)
    if None in (record.backbone, record.num_classes, record.input_size):
        raise ConvertError(f"{source} holds a {type(module).__name__} without the ds.meta record that says how "
                           f"to rebuild it (backbone, num_classes, input_size): it was not written by ds")
    save_network(module, tmp)
    loaded = load_network(tmp)
    errors = verify(module.eval(), loaded, record.input_size)
    if not errors["max_rel"] <= MERGE_TOLERANCE:
        raise ConvertError(f"{source}: the rebuilt network differs from the stored module (max relative error "
                           f"{errors['max_rel']:.3g}); nothing was written")
    kind = "merged network" if record.merged else "shrunk network" if record.pattern and 0 in record.pattern \
        else "base network"
    return (f"a pickled {type(module).__name__} ({kind} of {record.backbone}) became a network file; rebuilt with "
            f"ds.load_network, its outputs differ from the module's by at most {errors['max_abs']:.2g} "
            f"(relative {errors['max_rel']:.2g}) on random input")


def _checkpoint_file(ckpt: dict, source: Path, tmp: Path) -> str:
    converted = as_data(ckpt)
    try:
        save_checkpoint(converted, tmp)
    except TypeError as error:
        raise ConvertError(f"{source}: {error}") from None
    reread = load_checkpoint(tmp)
    if set(reread) != set(converted) or not torch.equal(_first_tensor(reread), _first_tensor(converted)):
        raise ConvertError(f"{source}: the converted checkpoint does not read back equal; nothing was written")
    return f"a checkpoint dict ({len(converted)} entries) was rewritten as plain data"


def _first_tensor(ckpt: dict) -> torch.Tensor:
    state = ckpt.get("model") if isinstance(ckpt.get("model"), dict) else ckpt
    return next((v for v in state.values() if torch.is_tensor(v)), torch.zeros(0))


def _update_provenance(source: Path, target: Path, old_sha: str) -> bool:
    record_path = provenance_path(source)
    if not record_path.is_file():
        return False
    record = json.loads(record_path.read_text())
    record.update(sha256=file_sha256(target),
                  converted={"from_sha256": old_sha, "by": CONVERT_COMMAND, "date_utc": utc_now()})
    provenance_path(target).write_text(json.dumps(record, indent=1) + "\n")
    return True


def convert(source: str | Path, out: str | Path | None = None) -> str:
    """Convert `source` (trusted!) into `out` (default: in place); a sentence saying what was done."""
    source = Path(source)
    target = Path(out) if out is not None else source
    if not source.is_file():
        raise ConvertError(f"{source}: no such file")
    check_published_hash(source)
    try:
        load_checkpoint(source)
        return f"{source} is data only already: nothing to convert, nothing written"
    except UnsafeCheckpoint:
        pass
    except CheckpointError as error:
        raise ConvertError(str(error)) from None
    old_sha = file_sha256(source)
    content = torch.load(source, map_location="cpu", weights_only=False)   # trusted: this command's purpose
    tmp = target.with_name(f".{target.name}.{os.getpid()}.convert.tmp")
    try:
        if isinstance(content, nn.Module):
            done = _network_file(content, source, tmp)
        elif isinstance(content, dict):
            done = _checkpoint_file(content, source, tmp)
        else:
            raise ConvertError(f"{source} holds a {type(content).__name__}: neither a network nor a checkpoint")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    provenance = " and its provenance record's sha256 updated" if _update_provenance(source, target, old_sha) else ""
    return f"{source}: {done}; written to {target}{provenance}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ds.convert", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", type=Path, help="a network or checkpoint file of an older ds that you trust")
    p.add_argument("--out", type=Path, help="where to write the converted file (default: replace FILE)")
    args = p.parse_args(argv)
    try:
        print(convert(args.file, args.out))
    except (ConvertError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
