"""street_scenes: generated image folders, a user's own folder, the Paddle CNN, its pyfunc, its MLflow Project."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import mlflow
import numpy as np
import pytest
from PIL import Image

from civicml.errors import InvalidInput, NotFound
from civicml.settings import Settings
from projects import get_use_case, load_dataset, train
from projects.base import HistoryReporter, Pruned
from conftest import download_logged, load_logged, logged_info, run_in_clean_process

ROOT = Path(__file__).resolve().parents[1]
N_IMAGES = 720
PARAMS = {"epochs": 4}


@pytest.fixture(scope="module")
def use_case():
    return get_use_case("street_scenes")


@pytest.fixture(scope="module")
def dataset(use_case, tmp_path_factory):
    folder = tmp_path_factory.mktemp("scenes")
    return load_dataset(use_case, use_case.generate_sources(folder, n=N_IMAGES, seed=7))


@pytest.fixture(scope="module")
def trained(use_case, dataset, tmp_path_factory):
    settings = Settings.from_env(env={}, home=tmp_path_factory.mktemp("home"))
    reporter = HistoryReporter()
    result = train(use_case, dataset, "cnn", PARAMS, settings=settings, seed=0, reporter=reporter)
    return settings, result, reporter


def test_generator_writes_one_balanced_folder_per_class_and_is_seeded(use_case, tmp_path):
    from projects.street_scenes import CLASSES

    first = use_case.generate_sources(tmp_path / "a", n=18, seed=3)[0]
    again = use_case.generate_sources(tmp_path / "b", n=18, seed=3)[0]
    other = use_case.generate_sources(tmp_path / "c", n=18, seed=4)[0]
    assert sorted(p.name for p in first.iterdir()) == sorted(CLASSES)
    assert all(len(list((first / c).glob("*.png"))) == 3 for c in CLASSES)
    files = sorted(p.relative_to(first) for p in first.rglob("*.png"))
    assert files == sorted(p.relative_to(again) for p in again.rglob("*.png"))
    assert all((first / f).read_bytes() == (again / f).read_bytes() for f in files)
    other_bytes = {p.read_bytes() for p in other.rglob("*.png")}
    assert not other_bytes & {(first / f).read_bytes() for f in files}


def test_dataset_holds_chw_float_images_and_a_fingerprint(dataset):
    assert len(dataset) == N_IMAGES
    assert dataset.features == ("image",) and dataset.target == "label"
    image = dataset.frame["image"].iloc[0]
    assert image.shape == (3, 32, 32) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert dataset.report["per_class"] == {c: N_IMAGES // 6 for c in sorted(dataset.y.unique())}
    assert len(dataset.fingerprint) == 64


def _write(path: Path, size, colour, fmt="PNG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, fmt)


def test_a_users_own_folder_with_other_classes_sizes_and_formats(use_case, tmp_path):
    folder = tmp_path / "mine"
    _write(folder / "ok" / "a.png", (64, 48), (10, 200, 10))
    _write(folder / "ok" / "b.JPG", (100, 100), (20, 190, 30), "JPEG")
    _write(folder / "broken_sign" / "c.png", (32, 32), (200, 10, 10))
    _write(folder / "broken_sign" / "nested" / "d.bmp", (40, 40), (190, 20, 20), "BMP")
    shutil.copy(folder / "ok" / "a.png", folder / "ok" / "a_again.png")  # the same photo twice
    (folder / "ok" / "notes.txt").write_text("not an image")
    (folder / "broken_sign" / "e.png").write_bytes(b"\x89PNG truncated")
    (folder / "stray.png").write_bytes((folder / "ok" / "a.png").read_bytes())
    ds = use_case.integrate([folder])
    assert sorted(ds.y.unique()) == ["broken_sign", "ok"]
    assert len(ds) == 4
    assert all(img.shape == (3, 32, 32) for img in ds.frame["image"])
    assert ds.report["duplicates_dropped"] == 1
    assert ds.report["unreadable_files"] == 1
    assert ds.report["ignored_files"] == 1
    assert ds.report["files_outside_class_folders"] == 1
    assert list(ds.frame.columns) == ["image", "label"]
    first_ok = ds.frame.loc[ds.frame["label"] == "ok", "image"].iloc[0]  # ok/a.png: files are read in name order
    assert np.allclose(first_ok[:, 0, 0], np.array([10, 200, 10]) / 255.0)


def test_unusable_folders_fail_with_clear_errors(use_case, tmp_path):
    with pytest.raises(NotFound, match="not found"):
        use_case.integrate([tmp_path / "nowhere"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match="no class sub-folders"):
        use_case.integrate([tmp_path / "empty"])
    (tmp_path / "junk" / "cls").mkdir(parents=True)
    (tmp_path / "junk" / "cls" / "x.png").write_bytes(b"garbage")
    with pytest.raises(InvalidInput, match="no readable image"):
        use_case.integrate([tmp_path / "junk"])
    _write(tmp_path / "one" / "only" / "a.png", (8, 8), (1, 2, 3))
    _write(tmp_path / "one" / "only" / "b.png", (8, 8), (4, 5, 6))
    with pytest.raises(InvalidInput, match="at least two classes"):
        use_case.integrate([tmp_path / "one"])


def test_augmentation_flips_and_crops_but_keeps_shape_and_range():
    from projects.street_scenes.model import augment

    rng = np.random.default_rng(0)
    batch = np.random.default_rng(1).random((16, 3, 32, 32), dtype=np.float32)
    out = augment(batch, rng)
    assert out.shape == batch.shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert not np.allclose(out, batch)


@pytest.mark.slow
def test_cnn_learns_well_above_chance_and_logs_curves(dataset, trained):
    settings, result, reporter = trained
    chance = 1 / 6
    assert result.metrics["macro_f1"] > 0.45, result.metrics  # about 0.7 measured; chance is 0.17
    assert result.metrics["accuracy"] > 2.5 * chance
    assert 1 <= len(reporter.values) <= PARAMS["epochs"]
    assert max(v for _, v in reporter.values) == pytest.approx(result.metrics["macro_f1"])
    client = mlflow.MlflowClient(settings.tracking_uri)
    run = client.get_run(result.run_id)
    assert run.data.tags["civicml.data_fingerprint"] == dataset.fingerprint
    history = client.get_metric_history(result.run_id, "valid_macro_f1")
    assert [m.step for m in history] == [s for s, _ in reporter.values]
    assert len(client.get_metric_history(result.run_id, "train_loss")) == len(reporter.values)
    assert 100_000 < run.data.metrics["parameters"] < 1_000_000
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert {"plots/validation_curve.png", "plots/confusion_matrix.png"} <= artifacts


@pytest.mark.slow
def test_logged_model_reproduces_training_on_batches_of_1_and_64(use_case, dataset, trained):
    from sklearn.metrics import f1_score

    settings, result, _ = trained
    model = load_logged(settings, result.model_uri)
    _, valid = use_case.split(dataset, seed=0)
    images = np.stack(valid.X["image"].to_numpy())
    out = model.predict(images)
    labels = sorted(dataset.y.unique())
    assert list(out.columns) == ["label"] + [f"p_{c}" for c in labels]
    assert f1_score(valid.y, out["label"], average="macro") == pytest.approx(result.metrics["macro_f1"], abs=1e-9)
    assert np.allclose(out[[f"p_{c}" for c in labels]].sum(axis=1), 1.0, atol=1e-5)
    batch = model.predict(images[:64])
    assert len(batch) == 64
    assert (batch["label"].to_numpy() == out["label"].to_numpy()[:64]).all()
    for i in (0, 17, 63):
        one = model.predict(images[i:i + 1])
        assert len(one) == 1 and one["label"].iloc[0] == batch["label"].iloc[i]
        assert np.allclose(one.iloc[0, 1:].to_numpy(float), batch.iloc[i, 1:].to_numpy(float), atol=1e-5)
    # the frame the use case works with is accepted too (one column of CHW arrays)
    assert (model.predict(valid.X.head(5))["label"].to_numpy() == out["label"].to_numpy()[:5]).all()


@pytest.mark.slow
def test_logged_model_carries_signature_metadata_and_example(trained):
    settings, result, _ = trained
    info = logged_info(settings, result.model_uri)
    inputs = info.signature.inputs.inputs
    assert len(inputs) == 1 and inputs[0].shape == (-1, 3, 32, 32) and inputs[0].type == np.dtype("float32")
    assert info.signature.outputs.input_names()[0] == "label"
    assert info.metadata["use_case"] == "street_scenes"
    assert info.metadata["labels"] == sorted(info.metadata["labels"]) and len(info.metadata["labels"]) == 6
    assert len(info.metadata["data_fingerprint"]) == 64
    assert info.saved_input_example_info is not None
    assert "python_model" not in info.flavors["python_function"]  # models-from-code: no pickle


@pytest.mark.slow
def test_logged_model_loads_where_projects_is_not_importable(trained, dataset, tmp_path):
    settings, result, _ = trained
    local = download_logged(settings, result.model_uri, str(tmp_path / "model"))
    images = np.stack(dataset.X["image"].head(64).to_numpy())
    np.save(tmp_path / "images.npy", images)
    expected = mlflow.pyfunc.load_model(local).predict(images)
    script = (
        "import sys, numpy as np, mlflow\n"
        "m = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "x = np.load(sys.argv[2])\n"
        "result = {'labels': m.predict(x)['label'].tolist(), 'one': m.predict(x[:1])['label'].tolist()}\n"
    )
    answer = run_in_clean_process(script, local, str(tmp_path / "images.npy"), cwd=tmp_path)
    assert answer["projects_loaded"] is False
    assert answer["labels"] == expected["label"].tolist()
    assert answer["one"] == expected["label"].tolist()[:1]


@pytest.mark.slow
def test_logged_model_predicts_from_many_threads_at_once(trained, dataset):
    settings, result, _ = trained
    model = load_logged(settings, result.model_uri)
    images = np.stack(dataset.X["image"].head(64).to_numpy())
    expected = model.predict(images)["label"].tolist()
    answers, errors = [], []

    def worker(k):
        try:
            for _ in range(3):
                answers.append(model.predict(images[k:k + 32 + k])["label"].tolist() == expected[k:k + 32 + k])
        except Exception as err:  # noqa: BLE001 - collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(answers) == 24 and all(answers)


class PruneAtTwo:
    def report(self, step, value):
        if step >= 2:
            raise Pruned(step, value)


@pytest.mark.slow
def test_a_pruning_reporter_stops_training(use_case, dataset, tmp_path):
    settings = Settings.from_env(env={}, home=tmp_path)
    small = dataset.subset(np.arange(0, len(dataset), 3))
    with pytest.raises(Pruned) as pruned:
        train(use_case, small, "cnn", {"epochs": 5, "width": 16}, settings=settings, reporter=PruneAtTwo())
    assert pruned.value.step == 2


@pytest.mark.slow
def test_fit_is_deterministic_for_a_seed(use_case, dataset):
    from projects.base import NullReporter

    small = dataset.subset(np.arange(0, len(dataset), 4))
    train_part, valid_part = use_case.split(small, seed=1)
    family = use_case.family("cnn")
    params = {**family.defaults, "epochs": 1, "width": 16, "seed": 5}
    first = family.fit(train_part, valid_part, params, NullReporter()).predict_proba(valid_part.X)
    second = family.fit(train_part, valid_part, params, NullReporter()).predict_proba(valid_part.X)
    assert np.array_equal(first, second)


def _civicml_command_dir(tmp_path: Path) -> Path:
    """Where a ``civicml`` executable is: the venv's, or a shim to ``python -m app.cli`` if not installed."""
    installed = Path(sys.executable).parent / "civicml"
    if installed.exists():
        return installed.parent
    shim_dir = tmp_path / "bin"
    shim_dir.mkdir()
    shim = shim_dir / "civicml"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m app.cli "$@"\n')
    shim.chmod(0o755)
    return shim_dir


def run_project(project: str, params: dict, tmp_path: Path) -> tuple[subprocess.CompletedProcess, Settings]:
    """``mlflow run projects/<project> --env-manager local`` in a temporary CivicML home."""
    from civicml.tracking import experiment_id

    settings = Settings.from_env(env={}, home=tmp_path / "home")
    experiment_id(settings, project)  # with CivicML's artifact root, so that `mlflow run` logs under the home
    env = dict(os.environ, CIVICML_HOME=str(settings.home), MLFLOW_TRACKING_URI=settings.tracking_uri,
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               PATH=os.pathsep.join([str(_civicml_command_dir(tmp_path)), os.environ.get("PATH", "")]))
    env.pop("MLFLOW_RUN_ID", None)
    command = [sys.executable, "-m", "mlflow", "run", str(ROOT / "projects" / project), "--env-manager", "local",
               "--experiment-name", project]
    for key, value in params.items():
        command += ["-P", f"{key}={value}"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    return done, settings


@pytest.mark.slow
def test_mlflow_run_trains_the_project(tmp_path):
    done, settings = run_project("street_scenes", {"rows": 240, "epochs": 1, "seed": 2}, tmp_path)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-4000:])
    client = mlflow.MlflowClient(settings.tracking_uri)
    experiment = client.get_experiment_by_name("street_scenes")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert "macro_f1" in run.data.metrics and run.data.params["epochs"] == "1"
    assert "civicml.model_uri" in run.data.tags


def test_served_cnn_answers_alike_in_every_tensor_form_and_batches_images(trained, dataset):
    """MLflow's nested ``instances``, V2 JSON data (flat, typed FP32) and V2's binary extension give one answer;
    bad tensors are 400s naming the problem; concurrent images share model calls."""
    import orjson
    from fastapi.testclient import TestClient

    import registry
    from serving import Endpoint, create_app

    settings, result, _ = trained
    registry.register(result.model_uri, "scenes-forms", alias="challenger", settings=settings)
    images = np.stack(dataset.X["image"].head(3).to_numpy()).astype(np.float32)
    endpoint = Endpoint("scenes-forms", alias="challenger", settings=settings, refresh_seconds=0, key="scenes-forms")
    with TestClient(create_app(endpoint, follow=False)) as client:
        nested = client.post("/invocations", json={"instances": images.astype(float).tolist()})
        assert nested.status_code == 200, nested.text
        expected = [p["label"] for p in nested.json()["predictions"]]
        from serving import json_tensors

        assert json_tensors.ready(wait=120)  # nested JSON read in one pass, or (params first) by orjson: one answer
        one_pass = client.post("/invocations", content=orjson.dumps({"instances": images.astype(float).tolist()}))
        general = client.post("/invocations", content=orjson.dumps({"params": None,
                                                                     "instances": images.astype(float).tolist()}))
        assert one_pass.status_code == general.status_code == 200
        assert one_pass.content.split(b'"model"')[0] == general.content.split(b'"model"')[0]
        assert one_pass.json()["predictions"] == nested.json()["predictions"]
        url = "/v2/models/scenes-forms/infer"
        tensor = {"name": "image", "datatype": "FP32", "shape": list(images.shape)}
        flat = client.post(url, json={"inputs": [{**tensor, "data": images.reshape(-1).astype(float).tolist()}]})
        assert flat.status_code == 200, flat.text
        header = orjson.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": images.nbytes}}]})
        binary = client.post(url, content=header + images.astype("<f4").tobytes(),
                             headers={"inference-header-content-length": str(len(header))})
        assert binary.status_code == 200, binary.text
        classes = [k[2:] for k in nested.json()["predictions"][0] if k.startswith("p_")]
        probabilities = [[p[f"p_{c}"] for c in classes] for p in nested.json()["predictions"]]
        for answer in (flat, binary):
            outputs = {o["name"]: o for o in answer.json()["outputs"]}
            assert outputs["label"]["data"] == expected
            assert outputs["probabilities"]["parameters"]["labels"] == classes
            assert np.allclose(np.reshape(outputs["probabilities"]["data"], (3, -1)), probabilities, atol=1e-6)

        bad = {"a string": {"data": ["0.5"] * images.size}, "a boolean": {"data": [True] * images.size},
               "too few values": {"data": [0.5] * 10}, "a float32 overflow": {"data": [1e39] * images.size},
               "a wrong shape": {"shape": [3, 3, 16, 64], "data": [0.5] * images.size}}
        for what, change in bad.items():
            refused = client.post(url, json={"inputs": [{**tensor, **change}]})
            assert refused.status_code == 400, what
        nan = images.copy()
        nan[0, 0, 0, 0] = np.nan
        header = orjson.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": nan.nbytes}}]})
        refused = client.post(url, content=header + nan.astype("<f4").tobytes(),
                              headers={"inference-header-content-length": str(len(header))})
        assert refused.status_code == 400 and "finite" in refused.text

        runtime = endpoint.current.runtime
        assert runtime.slice_cost >= runtime.max_batch * images[0].size  # a batch holds max_batch images
        calls = runtime.batches
        body = orjson.dumps({"instances": images[:1].astype(float).tolist()})
        threads = [threading.Thread(target=lambda: client.post("/invocations", content=body)) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert runtime.batches - calls <= 16


def _general(body: bytes):
    """What the codec makes of a body without the JSON kernel (orjson, then numpy as the validator would)."""
    import orjson

    from serving.codecs import MLflowCodec

    try:
        payload, _ = MLflowCodec.decode(body, "application/json")
    except InvalidInput as err:
        return f"400 {err}"
    doc = orjson.loads(body)
    return np.asarray(payload, dtype=np.float64) if isinstance(payload, list) and "params" not in doc else payload


def test_nested_json_images_are_read_in_one_pass_with_the_values_orjson_gives():
    """A float tensor model's nested ``instances`` are read by serving/json_tensors.py into the doubles orjson
    gives for the same text (bit for bit: awkward digits, exponents, -0.0, integers, whitespace, ``inputs``);
    any body it is not sure of goes the general way, and is answered (or refused) as before."""
    import orjson

    from serving import json_tensors
    from serving.codecs import MLflowCodec

    assert json_tensors.ready(wait=120)
    rng = np.random.default_rng(3)
    image = rng.random((2, 3, 4, 5)).astype(np.float32)
    tricky = ["0.46666666865348816", "0.5254902243614197", "1e22", "1E-22", "-0.0", "-0", "0", "7", "-12",
              "9007199254740992", "123456789012345678e-5", "0.30000000000000004", "2.5e-3", "0.000123", "1e+2",
              "4.35e8", "0.1", "-1.7976931348623157e+10", "1e-30", "1.2345678901234567e-25", "3.2165432156789012e-06", "3.4028234663852886e+38", "0.49999999999999994"]
    rows = ", ".join(f"[{t}, {t}]" for t in tricky)
    good = [orjson.dumps({"instances": image.astype(float).tolist()}),
            f'{{"instances": {image.astype(float).tolist()}}}'.encode(),
            f' {{ "inputs" :\n\t[{rows}] }}\r\n'.encode()]
    for body in good:
        expected = _general(body)
        for dtype, bits in ((np.float64, np.int64), (np.float32, np.int32)):  # as numpy would round the list
            read = json_tensors.nested_floats(body, dtype)
            assert isinstance(read, np.ndarray) and read.dtype == dtype, body[:80]
            assert read.shape == expected.shape
            assert read.view(bits).tolist() == np.asarray(orjson.loads(body)[next(iter(orjson.loads(body)))],
                                                          dtype=dtype).view(bits).tolist()
        assert MLflowCodec.decode(body, "application/json", np.dtype("float32"))[0].dtype == np.float32

    unusual = ['{"instances": [[1, 2], [3]]}', '{"instances": [[1, 2], 3]}', '{"instances": [1, 2]}',
               '{"instances": [[]]}', '{"instances": [[1,]]}', '{"instances": [[01]]}', '{"instances": [[+1]]}',
               '{"instances": [[.5]]}', '{"instances": [[1.]]}', '{"instances": [[1e]]}', '{"instances": [[--1]]}',
               '{"instances": [[NaN]]}', '{"instances": [[Infinity]]}', '{"instances": [[1 2]]}',
               '{"instances": [[1e400]]}', '{"instances": [[1e-50]]}', '{"instances": [[12345678901234567890]]}',
               '{"instances": [[true]]}', '{"instances": [["0.5"]]}', '{"instances": [[null]]}',
               '{"instances": [[1]]\x0b}', '{"instances": [[1]], "params": {"a": 1}}', '{"instances": [[1]]',
               '{"instances": [[1]]} x', '{"instances": [[1]], "instances": [[2]]}', '{"inputs": {"a": [1]}}']
    for text in unusual:
        body = text.encode()
        assert json_tensors.nested_floats(body) is None, text
        try:
            kept = MLflowCodec.decode(body, "application/json", np.dtype("float32"))
        except InvalidInput as err:
            assert _general(body) == f"400 {err}", text
        else:
            assert repr(kept) == repr(MLflowCodec.decode(body, "application/json")), text


def test_v2_json_float_data_is_read_in_one_pass_and_answers_as_before():
    """A V2 JSON request's one FP32/FP64 input: its ``data`` read by the one-pass reader into the array the
    list made before; a second ``"data"`` (here the request's id) sends the body the general way, and
    every refusal keeps its message."""
    import orjson

    from serving import json_tensors
    from serving.codecs import V2Codec

    assert json_tensors.ready(wait=120)
    rng = np.random.default_rng(4)
    image = rng.random((2, 3, 4, 5))
    shape = list(image.shape)

    def decode(inputs, general=False):
        doc = {"inputs": inputs, **({"id": "data"} if general else {})}
        try:
            return V2Codec.decode(orjson.dumps(doc), "application/json", True)[0]
        except InvalidInput as err:
            return f"400 {err}"

    for datatype, dtype in (("FP32", np.float32), ("FP64", np.float64)):
        for data in (image.reshape(-1).tolist(), image.tolist()):  # flat, or nested as V2 allows
            tensor = {"name": "image", "datatype": datatype, "shape": shape, "data": data}
            read, general = decode([tensor]), decode([tensor], general=True)
            assert json_tensors.typed_floats(orjson.dumps({"inputs": [tensor]})) is not None  # read in one pass
            assert read.dtype == general.dtype == dtype and read.shape == general.shape == image.shape
            assert read.tobytes() == general.tobytes()
    flat = image.reshape(-1).tolist()
    bad = [{"data": flat[:-1]}, {"data": [1e39] + flat[1:]}, {"data": ["0.5"] + flat[1:]},
           {"data": [True] + flat[1:]}, {"shape": [2, 3, 4, 4]}, {"datatype": "INT8"}, {"datatype": "FP16"}]
    for change in bad:
        tensor = {"name": "image", "datatype": "FP32", "shape": shape, "data": flat, **change}
        assert repr(decode([tensor])) == repr(decode([tensor], general=True)), change
    two = [{"name": "a", "datatype": "FP32", "shape": [1, 1], "data": [[1.0]]},
           {"name": "b", "datatype": "FP32", "shape": [1, 1], "data": [[2.0]]}]
    assert decode(two) == decode(two, general=True)
