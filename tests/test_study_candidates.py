"""Chapter 2's candidate finetunes resume by pattern, not by name: a search rerun that gives a name
another pattern (another CPU, another data order) trains that name again instead of reusing the
row and network of the old pattern."""
from types import SimpleNamespace

import numpy as np

import ds
from ds import gating
from ds.study import search
from ds.study.layout import RunLayout


def test_a_candidate_whose_name_now_stands_for_another_pattern_is_finetuned_again(tmp_path, monkeypatch):
    base = ds.create_model("mobilenetv2_035", num_classes=10, input_size=16)
    searchable = [s.index for s in gating.searchable_switches(base)]
    first, second = [1] * len(ds.switches(base)), [1] * len(ds.switches(base))
    first[searchable[0]], second[searchable[1]] = 0, 0              # one removed block each
    budget = len(searchable) - 1
    layout = RunLayout(tmp_path)
    loader = SimpleNamespace(labels=np.zeros(100), subset=lambda indices, train=True: None)
    ch = SimpleNamespace(layout=layout, train_loader=loader, seed=0, workers=1, threads=1,
                         data=SimpleNamespace(test_labels=np.zeros(20)))
    trained = []

    def side_by_side(fn, shared, jobs, workers, threads):           # stands for the finetunes
        for job in jobs:
            trained.append((job.name, job.pattern))
            job.out_dir.mkdir(parents=True, exist_ok=True)
            (job.out_dir / "checkpoint.pt").write_text("old")
            yield job, {"top1_removed": 10.0, "holdout_top1": 50.0, "top1": 60.0}

    monkeypatch.setattr(search, "side_by_side", side_by_side)
    monkeypatch.setattr(search, "held_out", lambda ch, images: None)
    monkeypatch.setattr(search.FromBase, "of", classmethod(lambda cls, *args: None))
    search.finetune_candidates(ch, base, {"searched-k1": first}, [budget], 1, None, 10)
    search.finetune_candidates(ch, base, {"searched-k1": first}, [budget], 1, None, 10)
    assert trained == [("searched-k1", tuple(first))]              # the same pattern again: reused
    table = search.finetune_candidates(ch, base, {"searched-k1": second}, [budget], 1, None, 10)
    assert trained[-1] == ("searched-k1", tuple(second))            # another pattern under the name: trained
    assert table["pattern_bits"].tolist() == ["".join(map(str, second))]
