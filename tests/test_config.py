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
