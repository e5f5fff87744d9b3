from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from smlp_deploy import Classifier, Prediction, SmlpDeployError
from smlp_deploy.cli.predict import main as predict_main
from smlp_deploy.cpu import openvino_cpu_capabilities
from smlp_deploy.environment import import_problem
from smlp_deploy.errors import ArtifactError, BackendUnavailableError, ImageError, InputError
from smlp_deploy.export import THRESHOLDS, BatchProfile, BuildOptions, compare, export_model
from smlp_deploy.models import create_model
from smlp_deploy.runtime import load_backend
from smlp_deploy.tensorrt.flavours import FLAVOURS, HEADER_BYTES

from .conftest import photo_batch

SIZE = 64
OPENVINO = import_problem("openvino")
BF16 = OPENVINO or (None if "BF16" in openvino_cpu_capabilities() else "this CPU has no bf16 instructions")


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("classifier") / "export"
    weights = out.parent / "model.pt"
    torch.manual_seed(0)
    torch.save(create_model("test", image_size=SIZE).state_dict(), weights)
    build = BuildOptions(BatchProfile(1, 8, 32), workspace_mib=1024)
    export_model("test", checkpoint=weights, image_size=SIZE, precisions=("fp32", "fp16"), out_dir=out, build=build,
                 openvino=OPENVINO is None, quiet=True)
    shutil.copy(weights, out / "model.pt")  # the export's own checkpoint beside it: known by its sha256
    return out


BACKENDS = [
    pytest.param("model.pt", id="torch"),
    pytest.param("model.onnx", id="onnxruntime-fp32"),
    pytest.param("model.fp16.onnx", id="onnxruntime-fp16"),
    pytest.param("engine.fp32.plan", id="tensorrt-fp32", marks=pytest.mark.tensorrt),
    pytest.param("engine.fp16.plan", id="tensorrt-fp16", marks=pytest.mark.tensorrt),
    pytest.param("engine.fp32.rtx.plan", id="tensorrt-rtx-fp32", marks=pytest.mark.tensorrt("tensorrt-rtx")),
    pytest.param("engine.fp16.rtx.plan", id="tensorrt-rtx-fp16", marks=pytest.mark.tensorrt("tensorrt-rtx")),
    pytest.param(("model.onnx", {"backend": "openvino"}), id="openvino-fp32",
                 marks=pytest.mark.skipif(OPENVINO is not None, reason=f"needs OpenVINO: {OPENVINO}")),
    pytest.param(("model.onnx", {"backend": "openvino", "precision": "bf16"}), id="openvino-bf16",
                 marks=pytest.mark.skipif(BF16 is not None, reason=f"needs OpenVINO bf16: {BF16}")),
]


@pytest.fixture(scope="module", params=BACKENDS)
def classifier(request, export_dir) -> Classifier:
    name, options = request.param if isinstance(request.param, tuple) else (request.param, {})
    with Classifier(export_dir / name, max_batch_size=32, **options) as clf:
        yield clf


def test_backends_agree_with_pytorch_on_photos(classifier, export_dir, photos):
    """The reference is the network run by PyTorch directly on the preprocessed photos, not a Classifier: a
    Classifier on model.pt is checked too, not compared with itself."""
    with torch.no_grad():
        model = create_model("test", image_size=SIZE, checkpoint=export_dir / "model.pt")
        reference = model(torch.from_numpy(photo_batch(SIZE))).numpy()
    report = compare(reference, classifier.logits([str(p) for p in photos]))
    reduced = "fp16" in classifier.path.name or classifier.backend.compute_precision == "bf16"
    precision = "fp16" if reduced else "fp32"
    assert not THRESHOLDS[precision].failures(report), report


def test_list_equals_one_by_one_and_keeps_order(classifier, photos):
    items = [str(p) for p in photos] * 7 + [str(photos[0]), str(photos[1])]  # 37 > max batch 32
    together = classifier.logits(items)
    alone = np.stack([classifier.logits(item)[0] for item in items])
    assert together.shape == (37, 1000)
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-4 * np.abs(alone).max())
    predictions = classifier.predict(items)
    assert [p.index for p in predictions] == [int(i) for i in alone.argmax(1)]


def test_every_input_type(classifier, photos):
    path = photos[1]
    image = Image.open(path)
    batch = photo_batch(SIZE)[1:2]  # preprocessed from the path, as the encoded inputs are
    expected = classifier.logits(str(path))
    tolerance = 1e-5 * np.abs(expected).max()
    for item in [path, path.read_bytes(), batch, torch.from_numpy(batch), batch[0]]:
        np.testing.assert_allclose(classifier.logits(item), expected, rtol=0, atol=tolerance,
                                   err_msg=type(item).__name__)
    # The same photo decoded by the caller gives the same answer as its file (JPEG draft decoding is opt-in).
    for item in [image, np.asarray(image.convert("RGB"))]:
        np.testing.assert_allclose(classifier.logits(item), expected, rtol=0, atol=tolerance,
                                   err_msg=type(item).__name__)
    mixed = classifier.predict([str(path), path.read_bytes(), batch[0]])
    assert len({p.index for p in mixed}) == 1


def test_prediction_fields(classifier, photos):
    prediction = classifier.predict(str(photos[0]), topk=3)
    assert isinstance(prediction, Prediction)
    assert len(prediction.topk) == 3 and prediction.topk[0][:2] == (prediction.index, prediction.label)
    scores = [s for _, _, s in prediction.topk]
    assert scores == sorted(scores, reverse=True) and 0 < prediction.score <= 1


def test_threads_give_the_sequential_results(classifier, photos):
    items = [[str(p)] * 3 for p in photos] * 4
    sequential = [classifier.logits(chunk) for chunk in items]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(classifier.logits, items))
    for a, b in zip(sequential, threaded, strict=True):
        np.testing.assert_array_equal(a, b)


def test_bad_inputs_raise_documented_errors(classifier, tmp_path, photos):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 definitely not a jpeg")
    Image.open(photos[0]).save(tmp_path / "ok.png")  # a readable first image: the error names the second
    cases = [
        ([str(tmp_path / "ok.png"), "missing.jpg"], ImageError, r"^image #1 \(missing\.jpg\): no such file$"),
        (["x", str(bad)], ImageError, r"image #0 \(x\): no such file"),
        ([b"junk"], ImageError, "#0: not a readable image"),
        (np.zeros((2, 3, 32, 32), np.float32), InputError, r"image #0: preprocessed arrays must be \[3, 64, 64\]"),
        (np.zeros((5,), np.float32), InputError, r"\[N, 3, H, W\]"),
        (np.zeros((0, 3, 64, 64), np.float32), InputError, r"N >= 1"),
        (np.full((3, 64, 64), np.nan, np.float32), InputError, "NaN or infinite"),
        ([], InputError, "empty list"),
        (None, ImageError, "the image is a NoneType, not an image; pass a path"),
        (7, ImageError, "the image is a int, not an image"),
        ([str(bad), {"path": "x"}][::-1], ImageError, "image #0 is a dict, not an image"),
        ([str(bad), {"path": "x"}], ImageError, r"#0 \(.*bad.jpg\): not a readable image"),
        ([np.zeros((0, 0, 3), np.uint8)], ImageError, "#0: arrays must be uint8 images"),
        (io.BytesIO(b"junk"), ImageError, "image BytesIO: not a readable image"),
    ]
    for value, error, message in cases:
        with pytest.raises(error, match=message) as info:
            classifier.predict(value)
        assert isinstance(info.value, SmlpDeployError) and isinstance(info.value, ValueError)
        assert " at 0x" not in str(info.value)  # no internal reprs
    for topk in (0, -1, 2.5, True):
        with pytest.raises(InputError, match="topk must be a positive integer"):
            classifier.predict(str(tmp_path), topk=topk)


def test_manifest_sha256_is_checked(export_dir, tmp_path):
    copy = tmp_path / "export"
    shutil.copytree(export_dir, copy)
    with open(copy / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ArtifactError, match="does not match the sha256"):
        Classifier(copy / "model.onnx")


def test_without_manifest_warns_and_uses_imagenet_defaults(export_dir, tmp_path, photos):
    lone = tmp_path / "model.pt"
    shutil.copy(export_dir / "model.pt", lone)
    with pytest.warns(UserWarning, match="no manifest.json"):
        clf = Classifier(lone)
    assert clf.preprocess.config.input_size == SIZE  # read from the checkpoint's mixing weights
    assert clf.predict(str(photos[0])).label


def test_unknown_suffix_and_missing_file(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"")
    with pytest.raises(InputError, match="cannot tell the backend"):
        Classifier(tmp_path / "model.bin")
    with pytest.raises(ArtifactError, match="does not exist"):
        Classifier(tmp_path / "nope.onnx")


@pytest.mark.parametrize("flavour", FLAVOURS.values(), ids=list(FLAVOURS))
def test_an_engine_needs_its_flavour_and_a_gpu(flavour, tmp_path):
    """A file with an engine's header passes the header check and reaches the backend's own availability check:
    the message names the library's install or the GPU it needs."""
    reason = flavour.run_unavailable()
    if reason is None:
        pytest.skip(f"{flavour.title} engines run here")
    engine = tmp_path / f"engine{flavour.engine_suffix}"
    engine.write_bytes(flavour.engine_magic + bytes(HEADER_BYTES))
    with pytest.raises(BackendUnavailableError) as error:
        Classifier(engine)
    assert str(error.value) == f"cannot open {str(engine)!r} with backend {flavour.name!r}: {reason}"


def test_predict_cli_table_and_json(export_dir, photos, capsys):
    assert predict_main([str(export_dir / "model.onnx"), str(photos[0].parent), "--topk", "2"]) == 0
    out = capsys.readouterr().out
    assert "chelsea.jpg" in out and "5 image(s) with onnxruntime" in out
    assert predict_main([str(export_dir / "model.onnx"), str(photos[0]), "--json"]) == 0
    record = json.loads(capsys.readouterr().out.splitlines()[0])
    assert record["image"].endswith(photos[0].name) and len(record["topk"]) == 5


def test_load_backend_refuses_a_file_it_cannot_open(export_dir):
    with pytest.raises(InputError, match=r"backend 'torch' cannot open .*model\.onnx.*: it runs PyTorch checkpoints "
                                         r"\(\.pt, \.pth\); ONNX models \(\.onnx\) are run by backend "
                                         r"'onnxruntime'"):
        load_backend(export_dir / "model.onnx", "torch")
    with pytest.raises(InputError, match="backend 'onnxruntime' cannot open"):
        load_backend(export_dir / "model.pt", "onnxruntime")
    with pytest.raises(InputError, match="cannot tell the backend") as info:
        load_backend(export_dir / "model.onnx", "tvm")
    assert info.value.parameter == "backend"


@pytest.mark.parametrize("name", ["model.pt", "model.onnx", "model.fp16.onnx"])
def test_backends_check_each_batch_against_the_artifact(export_dir, name):
    """The shape the artifact declares is checked before the backend runs, whatever the backend."""
    backend = load_backend(export_dir / name)
    assert backend.input_shape == (3, SIZE, SIZE) and backend.num_classes == 1000
    cases = [
        (np.zeros((2, 3, 32, 32), np.float32), r"batch of shape \[2, 3, 32, 32\] does not fit .*\['N', 3, 64, 64\]"),
        (np.zeros((3, SIZE, SIZE), np.float32), r"batch of shape \[3, 64, 64\] does not fit"),
        (np.zeros((0, 3, SIZE, SIZE), np.float32), r"batch of shape \[0, 3, 64, 64\] does not fit"),
        (np.zeros((1, 3, SIZE, SIZE), np.float64), "takes float32 batches .* got a float64 array"),
        ([[0.0]], "takes float32 batches .* got a list"),
    ]
    for batch, message in cases:
        with pytest.raises(InputError, match=message):
            backend.run(batch)
    backend.max_batch_size = 2
    with pytest.raises(InputError, match=r"batch of 3 is larger than .* \(at most 2\)"):
        backend.run(np.zeros((3, 3, SIZE, SIZE), np.float32))
    assert backend.run(np.zeros((2, 3, SIZE, SIZE), np.float32)).shape == (2, 1000)


def test_a_directory_is_named_with_the_files_it_holds(export_dir):
    engines = ["engine.fp16.rtx.plan", "engine.fp32.rtx.plan"] if FLAVOURS["tensorrt-rtx"].missing() is None else []
    files = ", ".join([*engines, "model.fp16.onnx", "model.onnx", "model.pt"])
    with pytest.raises(ArtifactError, match=f"is a directory, not a model file; pass one of its files: {files}$"):
        Classifier(export_dir)


def test_a_lone_onnx_file_takes_its_input_size_from_the_graph(export_dir, tmp_path, photos):
    lone = tmp_path / "model.onnx"
    shutil.copy(export_dir / "model.onnx", lone)
    with pytest.warns(UserWarning, match="ImageNet preprocessing at 64x64"):
        clf = Classifier(lone)
    assert clf.preprocess.config == Classifier(export_dir / "model.onnx").preprocess.config
    listed = Classifier(export_dir / "model.onnx")
    np.testing.assert_array_equal(clf.logits(str(photos[0])), listed.logits(str(photos[0])))


def test_a_file_the_manifest_does_not_list_is_refused(export_dir, tmp_path, photos):
    """A stale file beside a manifest (say an INT8 model left from an earlier export) was not verified with it."""
    copy = tmp_path / "export"
    shutil.copytree(export_dir, copy)
    shutil.copy(copy / "model.fp16.onnx", copy / "model.int8.onnx")
    with pytest.raises(ArtifactError, match=r"model\.int8\.onnx is not part of the export in .*lists model\.onnx, "
                                            r"model\.fp16\.onnx.*allow_unlisted=True") as info:
        Classifier(copy / "model.int8.onnx")
    assert info.value.parameter == "allow_unlisted"
    with pytest.warns(UserWarning, match="loading it unverified"):
        clf = Classifier(copy / "model.int8.onnx", allow_unlisted=True)
    assert clf.predict(str(photos[0])).label
    assert Classifier(copy / "model.pt").predict(str(photos[0])).label  # the export's checkpoint is its own


def test_onnx_external_data_outside_the_folder_is_refused(export_dir, tmp_path):
    """A model whose weights point outside its folder (``../secret.bin``) could read any file: refused."""
    import onnx

    model = onnx.load(str(export_dir / "model.onnx"))
    (tmp_path / "model").mkdir()
    onnx.save(model, str(tmp_path / "model" / "model.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="weights.bin", size_threshold=1024)
    (tmp_path / "model" / "weights.bin").rename(tmp_path / "secret.bin")
    proto = onnx.load(str(tmp_path / "model" / "model.onnx"), load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../secret.bin"
    (tmp_path / "model" / "model.onnx").write_bytes(proto.SerializeToString())
    with pytest.raises(ArtifactError, match=r"model\.onnx.*cannot be loaded by onnxruntime.*escapes model directory"):
        Classifier(tmp_path / "model" / "model.onnx")


def test_predict_cli_reports_unreadable_images_and_goes_on(export_dir, photos, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for photo in photos[:2]:
        shutil.copy(photo, folder)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    assert predict_main([str(export_dir / "model.onnx"), str(folder), "--json"]) == 1  # some failed
    records = {Path(r["image"]).name: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert sorted(records) == sorted([photos[0].name, photos[1].name, "broken.jpg"])
    assert "not a readable image" in records["broken.jpg"]["error"] and records[photos[0].name]["topk"]
    with pytest.raises(SystemExit):
        predict_main([str(export_dir / "model.onnx"), str(folder), "--topk", "0"])
    assert "--topk: must be at least 1" in capsys.readouterr().err


def test_predict_cli_classifies_what_it_can_and_names_each_missing_input(export_dir, photos, tmp_path, capsys):
    """As its help says: a missing image or an empty folder is its own error line, the others are classified,
    and the exit status is 1; with nothing at all to classify, an error before the model loads."""
    model, missing, empty = str(export_dir / "model.onnx"), tmp_path / "missing.jpg", tmp_path / "empty"
    empty.mkdir()
    assert predict_main([model, str(missing), str(photos[1]), str(empty), "--json"]) == 1
    records = {r["image"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert records[str(missing)] == {"image": str(missing), "error": f"image {str(missing)!r} does not exist"}
    assert records[str(empty)]["error"].startswith(f"folder {str(empty)!r} holds no images (.bmp, .gif")
    assert len(records[str(photos[1])]["topk"]) == 5
    assert predict_main([model, str(missing), str(photos[1])]) == 1
    table = capsys.readouterr().out
    assert "does not exist" in table and "2 image(s) with onnxruntime" in table and "1 could not be classified" in table
    for given in ([str(empty)], [str(missing), str(empty)]):
        with pytest.raises(InputError, match=r"^no images to classify: ") as info:
            predict_main([model, *given])
        assert info.value.parameter == "images"


def test_predict_cli_clamps_topk_to_the_classes_and_says_so(export_dir, photos, capsys):
    assert predict_main([str(export_dir / "model.onnx"), str(photos[1]), "--topk", "1500", "--json"]) == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)["topk"]) == 1000
    assert "note: --topk 1500 is more than the model's 1000 classes: showing 1000" in captured.err
    assert predict_main([str(export_dir / "model.onnx"), str(photos[1]), "--topk", "1500"]) == 0
    assert "next 999" in capsys.readouterr().out


def test_the_bundled_photos_folder_is_printed_for_commands(photos):
    done = subprocess.run([sys.executable, "-m", "smlp_deploy.samples"], capture_output=True, text=True, check=True)
    assert done.stdout == f"{photos[0].parent}\n" and {p.parent for p in photos} == {photos[0].parent}


def test_random_weights_are_said_once(random_export, photos):
    with pytest.warns(UserWarning, match=r"exported without a checkpoint: its predictions come from random weights "
                                         r"\(seed 3\)"):
        Classifier(random_export / "model.onnx")
    run = "import sys; from smlp_deploy.cli.predict import entry_point; sys.exit(entry_point())"
    done = subprocess.run([sys.executable, "-c", run, str(random_export / "model.onnx"), str(photos[0].parent)],
                          capture_output=True, text=True, check=True)
    assert done.stderr.count("random weights") == 1 and done.stderr.startswith("warning: ")


def test_a_checkpoint_alone_with_ten_classes_claims_no_imagenet_labels(tmp_path, photos):
    torch.save(create_model("test", image_size=SIZE, num_classes=10).state_dict(), tmp_path / "ten.pt")
    with pytest.warns(UserWarning, match="no manifest.json .* and 10 unnamed classes"):
        clf = Classifier(tmp_path / "ten.pt")
    assert clf.labels == [str(i) for i in range(10)] and clf.predict(str(photos[0])).label in clf.labels
    assert repr(clf) == (f"Classifier({str(tmp_path / 'ten.pt')!r}: backend torch, device cpu, fp32, max batch 32, "
                         "10 labels (0, 1, 2, ...))")


def test_jpeg_draft_is_asked_for_and_reaches_smlp_predict(export_dir, capsys):
    """Off by default (a file gives its decoded image's answer); --jpeg-draft decodes a large JPEG (retina.jpg,
    1411 px) at a reduced scale, which moves its scores a little."""
    from .conftest import SKIMAGE_DATA

    retina = SKIMAGE_DATA / "retina.jpg"
    scores = {}
    for flags in ([], ["--jpeg-draft"]):
        assert predict_main([str(export_dir / "model.onnx"), str(retina), "--json", *flags]) == 0
        scores[bool(flags)] = json.loads(capsys.readouterr().out)["topk"]
    with Classifier(export_dir / "model.onnx") as classifier:
        decoded = classifier.predict(Image.open(retina)).topk
    assert [t["score"] for t in scores[False]] == pytest.approx([s for _, _, s in decoded], rel=1e-5)
    assert [t["score"] for t in scores[True]] != pytest.approx([t["score"] for t in scores[False]], rel=1e-5)
