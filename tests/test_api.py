import ds


def test_public_api():
    for name in ("create_model", "switches", "apply_pattern", "merge", "verify", "macs", "params", "PATTERNS"):
        assert hasattr(ds, name), name
    assert list(ds.PATTERNS["mobilenetv2_140"]) == [f"DS-{c}" for c in "ABCDEF"]
    assert all(len(p) == 19 for p in ds.PATTERNS["mobilenetv2_140"].values())
