"""ds.provenance: one device resolver, one git helper."""
import pytest
import torch

from ds.errors import DeviceError
from ds.provenance import git_commit, resolve_device


def test_git_commit_of_this_repository_and_of_a_copy_without_git(tmp_path, monkeypatch):
    here = git_commit()
    assert here["commit"] and len(here["commit"]) == 40 and here["short"] == here["commit"][:7]
    monkeypatch.delenv("DS_GIT_COMMIT", raising=False)
    assert git_commit(tmp_path) == {"commit": None, "short": None, "dirty": None}
    monkeypatch.setenv("DS_GIT_COMMIT", "0123456789abcdef0123456789abcdef01234567")
    assert git_commit(tmp_path)["short"] == "0123456"


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            resolve_device("cuda")


def test_cpu_features_are_read_from_cpuinfo_flags(monkeypatch, tmp_path):
    import builtins
    from ds import provenance
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: AMD EPYC\nflags\t\t: fpu sse avx2 fma avx512f avx512_bf16 xsave\n")
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda path, *a, **k: real_open(cpuinfo if path == "/proc/cpuinfo" else path, *a, **k))
    assert provenance.cpu_features() == ["avx2", "fma", "avx512f", "avx512_bf16"]
    assert provenance.machine()["cpu_features"] == ["avx2", "fma", "avx512f", "avx512_bf16"]
