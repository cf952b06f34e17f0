from dataclasses import dataclass, field

import pytest

from mvs.config import apply_overrides, from_dict, load_config, save_config, to_dict


@dataclass
class Inner:
    lr: float = 1e-3
    sizes: tuple[int, ...] = (48, 32, 8)


@dataclass
class Outer:
    name: str = "run"
    inner: Inner = field(default_factory=Inner)
    optional: Inner | None = None


def test_yaml_round_trip(tmp_path):
    config = Outer(name="x", inner=Inner(lr=0.5, sizes=(1, 2)), optional=Inner())
    save_config(config, tmp_path / "c.yaml")
    back = load_config(Outer, tmp_path / "c.yaml")
    assert to_dict(back) == to_dict(config)
    assert isinstance(back.inner, Inner) and isinstance(back.optional, Inner)


def test_overrides_and_unknown_keys(tmp_path):
    save_config(Outer(), tmp_path / "c.yaml")
    back = load_config(Outer, tmp_path / "c.yaml", ["inner.lr=0.01", "name=tuned", "inner.sizes=[8, 4]"])
    assert back.inner.lr == 0.01 and back.name == "tuned" and list(back.inner.sizes) == [8, 4]
    with pytest.raises(ValueError, match="unknown option"):
        from_dict(Outer, {"inner": {"learning_rate": 1}})
    with pytest.raises(ValueError, match="key.sub=value"):
        apply_overrides({}, ["novalue"])
