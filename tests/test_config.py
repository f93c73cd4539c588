import pytest

from fashionlens.config import DataConfig, RunConfig, from_dict, load_yaml, save_yaml, to_dict


def test_yaml_round_trip(tmp_path):
    cfg = RunConfig(seed=7, data=DataConfig(spec="garments:x", image_size=96, rrc_scale=(0.3, 0.9)))
    save_yaml(cfg, tmp_path / "c.yaml")
    back = load_yaml(tmp_path / "c.yaml")
    assert back == cfg
    assert isinstance(back.data.rrc_scale, tuple)


def test_unknown_key_is_named():
    with pytest.raises(ValueError, match="imag_size"):
        from_dict({"data": {"imag_size": 3}})


def test_to_dict_nested():
    d = to_dict(RunConfig())
    assert d["data"]["image_size"] == DataConfig().image_size


def test_apply_overrides_sets_nested_fields_in_order():
    from fashionlens.config import apply_overrides

    cfg = RunConfig()
    out = apply_overrides(cfg, ["train.lr=0.01", "data.rrc_scale=[0.2,1.0]", "seed=3", "train.lr=0.02"])
    assert out is cfg and cfg.train.lr == 0.02 and cfg.seed == 3
    assert cfg.data.rrc_scale == (0.2, 1.0)  # YAML list -> the field's tuple
    assert apply_overrides(RunConfig(), []) == RunConfig()


@pytest.mark.parametrize("assignment, message", [
    ("train.lr", "expects section.field=value"),
    ("trian.lr=1", "no config section 'trian'"),
    ("train.lrr=1", "unknown field 'lrr'"),
])
def test_apply_overrides_names_what_is_wrong(assignment, message):
    from fashionlens.config import apply_overrides

    cfg = RunConfig()
    with pytest.raises(ValueError, match=message):
        apply_overrides(cfg, [assignment])
    assert cfg == RunConfig()  # nothing applied


def test_old_run_configs_with_an_index_section_still_load():
    """Runs saved when RunConfig carried the (unused) index settings load; the catalog owns IndexConfig now."""
    from fashionlens.config import RunConfig, from_dict, to_dict

    values = to_dict(RunConfig())
    values["index"] = {"backend": "faiss", "kind": "flat", "nlist": 0}
    assert from_dict(values) == RunConfig()
    with pytest.raises(ValueError, match="unknown config key"):
        from_dict({**values, "indexx": {}})


def test_softmax_matches_a_plain_reference():
    import numpy as np

    from fashionlens.utils import log_softmax, softmax

    z = np.random.default_rng(0).normal(0, 30, (5, 7))
    plain = np.array([[np.exp(v / 2) / np.exp(row / 2).sum() for v in row] for row in z])
    assert np.allclose(softmax(z, 2.0), plain) and np.allclose(softmax(z, 2.0).sum(-1), 1)
    assert np.allclose(log_softmax(z), np.log(softmax(z)))
    assert np.allclose(softmax(z[0]), softmax(z[:1])[0])  # 1-D: one row
    assert np.isfinite(softmax(np.array([[1e4, -1e4]]))).all()


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    from fashionlens.files import atomic_write

    path = tmp_path / "f.json"
    assert atomic_write(path, "old") == str(path) and path.read_text() == "old"
    atomic_write(path, b"new")
    assert path.read_bytes() == b"new"

    def broken(tmp):
        open(tmp, "w").write("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_write(path, broken)
    assert path.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]
    atomic_write(path, lambda tmp: open(tmp, "w").write("via a writer"))
    assert path.read_text() == "via a writer"
