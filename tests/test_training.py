import json

import numpy as np
import pytest
import torch

from mvs.checkpoint import load_model, read_checkpoint, save_checkpoint
from mvs.cli import main as mvs_main
from mvs.config import load_config
from mvs.errors import MVSInputError
from mvs.io import read_pfm
from mvs.models import CascadeMVSNet, ModelConfig
from mvs.training import DataConfig, OptimConfig, TrainConfig, build_datasets, train
from tests.conftest import make_plane_scene

SMALL_MODEL = ModelConfig(hypotheses=(8, 4, 2), feature_channels=(8, 8, 4), groups=(4, 4, 2), regularization_channels=(4, 4, 4))


@pytest.fixture(scope="module")
def plane_scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("planes")
    for k in range(3):
        make_plane_scene(root / f"scene_{k:03d}", views=3, width=48, height=32, seed=k)
    return root


def small_config(data, out, epochs=1):
    return TrainConfig(
        out=str(out),
        data=DataConfig(train=str(data), num_views=3, crop=None, validation_fraction=0.34),
        model=SMALL_MODEL,
        optim=OptimConfig(epochs=epochs, batch_size=2, warmup_steps=1, steps_per_epoch=2, validation_samples=2),
    )


def test_train_writes_a_resumable_run(plane_scenes, tmp_path):
    config = small_config(plane_scenes, tmp_path / "run", epochs=1)
    result = train(config, progress=False)
    assert result["epochs_run"] == 1
    for name in ("config.yaml", "last.pt", "best.pt", "metrics.jsonl"):
        assert (tmp_path / "run" / name).is_file()
    # The config beside the outputs rebuilds the run exactly.
    assert load_config(TrainConfig, tmp_path / "run" / "config.yaml").model == SMALL_MODEL
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    metrics = json.loads(lines[0])
    for key in ("train_loss", "val_loss", "val_mae", "val_acc_2", "samples_per_second", "lr"):
        assert key in metrics and np.isfinite(metrics[key])
    # Same folder, more epochs: resumes from the saved epoch instead of starting again.
    config.optim.epochs = 2
    result = train(config, progress=False)
    assert result["epochs_run"] == 1
    assert [json.loads(line)["epoch"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()] == [0, 1]
    state = read_checkpoint(tmp_path / "run" / "last.pt")["training_state"]
    assert state["epoch"] == 1 and "optimizer" in state


def test_extra_training_folders_are_split_each(plane_scenes, tmp_path):
    # The same kind of scene at another image size, in a second folder.
    larger = tmp_path / "larger"
    for k in range(3):
        make_plane_scene(larger / f"scene_{k:03d}", views=3, width=64, height=48, seed=10 + k)
    config = small_config(plane_scenes, tmp_path / "run")
    config.data.extra_train = [str(larger)]
    config.optim.validation_samples = None
    train_set, val_set = build_datasets(config)
    roots = lambda dataset: [group[0].root.parent for group in dataset.groups]  # noqa: E731
    # Each folder keeps its last third (one of three scenes) for validation.
    assert roots(train_set) == [plane_scenes] * 2 + [larger] * 2
    assert roots(val_set) == [plane_scenes, larger]
    assert len(val_set) == 6
    # A validation cap spreads over both held-out scenes instead of taking the first views.
    config.optim.validation_samples = 2
    _, capped = build_datasets(config)
    assert len(capped) == 2 and {tuple(capped[i]["images"].shape[-2:]) for i in range(2)} == {(32, 48), (48, 64)}

    config.data.extra_train = [str(tmp_path / "missing")]
    with pytest.raises(MVSInputError, match="missing"):
        build_datasets(config)


def test_train_can_start_from_a_checkpoint(plane_scenes, tmp_path):
    train(small_config(plane_scenes, tmp_path / "first"), progress=False)
    trained = read_checkpoint(tmp_path / "first" / "best.pt")
    # The second run names no model: the network's configuration comes from the checkpoint.
    config = small_config(plane_scenes, tmp_path / "second")
    config.model = ModelConfig()
    config.init_from = str(tmp_path / "first" / "best.pt")
    config.optim.lr = 0.0  # weights stay where they started, so they must equal the checkpoint's
    train(config, progress=False)
    assert load_config(TrainConfig, tmp_path / "second" / "config.yaml").model == SMALL_MODEL
    continued = read_checkpoint(tmp_path / "second" / "last.pt")["state_dict"]
    parameters = dict(CascadeMVSNet(SMALL_MODEL).named_parameters())
    assert parameters and all(torch.equal(continued[name], trained["state_dict"][name]) for name in parameters)
    # From random weights instead (same seed), they differ from the trained ones.
    config = small_config(plane_scenes, tmp_path / "third")
    config.optim.lr = 0.0
    train(config, progress=False)
    fresh = read_checkpoint(tmp_path / "third" / "last.pt")["state_dict"]
    assert not all(torch.equal(fresh[name], trained["state_dict"][name]) for name in parameters)


def test_train_rejects_a_missing_initial_checkpoint(plane_scenes, tmp_path):
    config = small_config(plane_scenes, tmp_path / "run")
    config.init_from = str(tmp_path / "nowhere.pt")
    with pytest.raises(MVSInputError, match="checkpoint not found"):
        train(config, progress=False)


def test_checkpoint_round_trip_is_weights_only(tmp_path):
    model = CascadeMVSNet(SMALL_MODEL)
    save_checkpoint(tmp_path / "c.pt", model, SMALL_MODEL, meta={"note": "x"})
    # torch.load with weights_only=True must accept it (no pickled code).
    torch.load(tmp_path / "c.pt", weights_only=True)
    loaded, payload = load_model(tmp_path / "c.pt")
    assert payload["meta"]["note"] == "x" and loaded.config == SMALL_MODEL
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    save_checkpoint(tmp_path / "h.pt", model, SMALL_MODEL, half=True)
    half, _ = load_model(tmp_path / "h.pt")
    assert next(half.parameters()).dtype == torch.float32
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(MVSInputError, match="not a readable checkpoint"):
        load_model(tmp_path / "bad.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(MVSInputError, match="not an mvs checkpoint"):
        load_model(tmp_path / "other.pt")


def test_mvs_train_and_reconstruct_commands(plane_scenes, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", f"data.train={plane_scenes}", "data.num_views=3", "data.crop=null", "data.validation_fraction=0.34",
            "optim.epochs=1", "optim.steps_per_epoch=1", "optim.batch_size=2", "optim.validation_samples=1",
            "model.hypotheses=[8,4,2]", "model.regularization_channels=[4,4,4]", "--out", str(run)]
    assert mvs_main(args) == 0
    assert "best.pt" in capsys.readouterr().out
    out = tmp_path / "recon"
    scene = plane_scenes / "scene_000"
    assert mvs_main(["reconstruct", str(scene), "--out", str(out), "--checkpoint", str(run / "best.pt"),
                     "--num-views", "3", "--min-consistent-views", "1", "--confidence-threshold", "0"]) == 0
    for view in range(3):
        depth = read_pfm(out / "depths" / f"{view:08d}.pfm")
        confidence = read_pfm(out / "confidence" / f"{view:08d}.pfm")
        assert depth.shape == confidence.shape == (32, 48)
        assert (depth >= 450 - 1e-3).all() and (depth <= 750 + 1e-3).all()  # inside the cams' range
        assert (out / "preview" / f"{view:08d}.png").is_file()
    summary = json.loads((out / "reconstruction.json").read_text())
    assert summary["views"] == 3 and summary["processed_size"] == [48, 32]
    assert (out / "fused.ply").is_file()


def test_reconstruct_rejects_bad_requests(tmp_path, capsys):
    assert mvs_main(["reconstruct", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "scene folder not found" in capsys.readouterr().err
    make_plane_scene(tmp_path / "s", views=2)
    assert mvs_main(["reconstruct", str(tmp_path / "s"), "--out", str(tmp_path / "o"), "--num-views", "1"]) == 2
    assert "--num-views" in capsys.readouterr().err
