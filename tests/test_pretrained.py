"""pretrained/classify.py and pretrained/extract-features.py (fbresnet_port/pretrained.py) on the Lua-made
ImageNet DenseNets of ../shared/reference.

Ground truth: the Lua forward outputs of the fixtures (output_eval.t7 for input.t7), the converted model's
own forward on an independently preprocessed image (numpy normalisation and crop for an image whose short
side is already 256, so Scale leaves it alone), torchvision's label list, and the Lua output formats of
classify.lua / extract-features.lua.
"""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO_ROOT, reference
from datasets import transforms as T
from fbresnet_port import load_lua_model, t7
from fbresnet_port import pretrained as P

SMALL = "densenet_imagenet_custom_2342_k8"
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(3, 1, 1)


def _model_path(case: str = SMALL) -> str:
    return str(reference(case, "model.t7"))


@pytest.fixture(scope="module")
def small_model() -> torch.nn.Module:
    return load_lua_model(_model_path()).eval()


def _rgb(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8)


def _by_hand(arr: np.ndarray) -> torch.Tensor:
    """Preprocessing of an H x W x 3 uint8 image whose shorter side is 256: Scale(256) is the identity,
    then (x/255 - mean)/std and the crop at ceil((W-224)/2), ceil((H-224)/2)."""
    assert min(arr.shape[:2]) == 256
    x = arr.transpose(2, 0, 1).astype(np.float32) * np.float32(1 / 255)
    x = (x - MEAN) / STD
    y1, x1 = math.ceil((arr.shape[0] - 224) / 2), math.ceil((arr.shape[1] - 224) / 2)
    return torch.from_numpy(np.ascontiguousarray(x[:, y1:y1 + 224, x1:x1 + 224]))


def _forward(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x.unsqueeze(0) if x.dim() == 3 else x)


def _parse_classify(text: str) -> list[tuple[str, list[tuple[float, str]]]]:
    """classify.lua's output: 'Classes for\\t<path>', k lines '<prob>\\t<label>', an empty line."""
    blocks = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        lines = block.strip("\n").split("\n")
        head = re.fullmatch(r"Classes for\t(.+)", lines[0])
        assert head, lines[0]
        rows = []
        for line in lines[1:]:
            prob, label = line.split("\t")
            assert prob == "%.14g" % float(prob)                  # Lua's number format
            rows.append((float(prob), label))
        blocks.append((head.group(1), rows))
    return blocks


def _check_top(rows: list[tuple[float, str]], probs: torch.Tensor, k: int = 5, tol: float = 2e-6) -> None:
    labels = P.imagenet_labels()
    top_p, top_i = probs.topk(k)
    assert [label for _, label in rows] == [labels[i] for i in top_i.tolist()]
    assert np.allclose([p for p, _ in rows], top_p.tolist(), rtol=0, atol=tol)


# ---------------------------------------------------------------------------------------------
# Labels and model path


def test_labels_are_torchvisions_imagenet_categories():
    from torchvision.models import ResNet50_Weights
    labels = P.imagenet_labels()
    assert labels == ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    assert len(labels) == 1000 and labels[0] == "tench" and labels[999] == "toilet tissue"


@pytest.mark.parametrize("case", [SMALL, "densenet_imagenet_d121_k32"])
def test_features_times_classifier_reproduce_lua_eval_output(case):
    """The features of load_network(model.t7) with the classifier removed, times that Linear layer, give
    Lua's evaluate() output (first fixture image; the small net also checks the whole Network)."""
    x = t7.load(reference(case, "input.t7"))[:1]
    lua_out = t7.load(reference(case, "output_eval.t7"))[:1]
    tol = 5e-6 * max(1.0, lua_out.abs().max().item())   # measured: 1.7e-6 (max 3.4), 1.3e-5 (max 22.5)
    model = P.load_network(_model_path(case))
    linear = list(model.children())[-1]
    if case == SMALL:
        assert (P.Network(model)(x) - lua_out).abs().max().item() < tol
    features = P.Network(P.strip_classifier(model))(x)
    assert features.shape == (1, linear.in_features)
    with torch.no_grad():
        again = torch.nn.functional.linear(features.double(), linear.weight.double(), linear.bias.double())
    assert (again.float() - lua_out).abs().max().item() < tol


def test_native_densenet_gives_the_same_features(small_model):
    """strip_classifier on this port's native DenseNet (classifier child) = on the Lua-converted Sequential."""
    from models.densenet import DenseNet
    from models.lua_weights import load_lua_weights
    native = DenseNet([2, 3, 4, 2], 8, True, 0.5, 0.0, 1000, imagenet=True)
    load_lua_weights(native, t7.load(_model_path()))
    x = t7.load(reference(SMALL, "input.t7"))
    expected = P.Network(P.strip_classifier(load_lua_model(_model_path())))(x)
    got = P.Network(P.strip_classifier(native))(x)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() < 1e-5


def test_converted_pt_file_is_accepted(tmp_path):
    """A ``python -m fbresnet_port.convert`` output loads like the .t7 it came from."""
    from fbresnet_port.convert import save_converted
    save_converted(load_lua_model(_model_path()), tmp_path / "net.pt")
    x = t7.load(reference(SMALL, "input.t7"))
    lua_out = t7.load(reference(SMALL, "output_eval.t7"))
    assert (P.Network(P.load_network(tmp_path / "net.pt"))(x) - lua_out).abs().max().item() < 2e-5


def test_strip_classifier_needs_a_final_linear():
    with pytest.raises(P.UserError, match="not a Linear classifier"):
        P.strip_classifier(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()))


# ---------------------------------------------------------------------------------------------
# classify (in process: fast)


def test_classify_prints_lua_format_and_model_probabilities(tmp_path, capsys, small_model):
    arr = _rgb(256, 301, 1)
    Image.fromarray(arr).save(tmp_path / "wide.png")
    big = _rgb(300, 400, 2)
    Image.fromarray(big).save(tmp_path / "big.png")
    paths = [str(tmp_path / "wide.png"), str(tmp_path / "big.png")]
    assert P.classify_main([_model_path(), *paths, "-device", "cpu", "-batchSize", "2"]) == 0
    out = capsys.readouterr().out
    assert out.endswith("\n\n") and out.startswith(f"Classes for\t{paths[0]}\n")
    blocks = _parse_classify(out)
    assert [p for p, _ in blocks] == paths
    _check_top(blocks[0][1], torch.softmax(_forward(small_model, _by_hand(arr))[0], 0))
    big_x = T.Compose([T.Scale(256), T.ColorNormalize(P.MEANSTD), T.CenterCrop(224)])(
        torch.from_numpy(big.transpose(2, 0, 1).copy()).float() / 255)
    _check_top(blocks[1][1], torch.softmax(_forward(small_model, big_x)[0], 0))


def test_classify_image_modes_topk_and_json(tmp_path, capsys):
    """Grey, RGBA, palette and CMYK files give what their RGB conversion gives (alpha dropped)."""
    rgb = _rgb(256, 260, 3)
    grey = rgb[..., 0]
    cases = {
        "grey.png": (Image.fromarray(grey), np.repeat(grey[..., None], 3, axis=2)),
        "rgba.png": (Image.fromarray(np.dstack([rgb, rgb[..., :1]]), "RGBA"), rgb),
    }
    pal = Image.fromarray(rgb).quantize(16)
    cases["pal.png"] = (pal, np.asarray(pal.convert("RGB")))
    cmyk = Image.fromarray(rgb).convert("CMYK")
    cases["cmyk.tif"] = (cmyk, np.asarray(cmyk.convert("RGB")))
    files, refs = [], []
    for name, (im, as_rgb) in cases.items():
        im.save(tmp_path / name)
        Image.fromarray(as_rgb).save(tmp_path / f"ref_{name}.png")
        files.append(str(tmp_path / name))
        refs.append(str(tmp_path / f"ref_{name}.png"))
    assert P.classify_main([_model_path(), *files, *refs, "--topk", "3", "--json", "-device", "cpu"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in results] == files + refs
    n = len(files)
    for got, ref in zip(results[:n], results[n:]):
        assert len(got["predictions"]) == 3
        assert got["predictions"] == ref["predictions"]
    labels = P.imagenet_labels()
    assert all(p["label"] == labels[p["class"] - 1] for r in results for p in r["predictions"])


def test_classify_reports_unreadable_images_and_goes_on(tmp_path, capsys):
    Image.fromarray(_rgb(256, 256, 4)).save(tmp_path / "ok.png")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    status = P.classify_main([_model_path(), str(tmp_path / "broken.jpg"), str(tmp_path / "ok.png")])
    captured = capsys.readouterr()
    assert status == 1
    assert [p for p, _ in _parse_classify(captured.out)] == [str(tmp_path / "ok.png")]
    err = captured.err.strip().splitlines()
    assert err[0].startswith(f"Error reading: {tmp_path / 'broken.jpg'} (")
    assert err[1] == "1 of 2 images could not be read"


# ---------------------------------------------------------------------------------------------
# Bad command lines: one line on stderr, exit status 1


@pytest.mark.parametrize("script, args, message", [
    ("classify", ["model.t7"], "Usage: classify.py [MODEL] [FILE]... (options: see classify.py --help)"),
    ("classify", ["{model}", "nothere.jpg"], "file not found: nothere.jpg"),
    ("classify", ["{model}", "{image}", "--topk", "0"], "--topk 0: must be a positive integer"),
    ("classify", ["{model}", "{image}", "-device", "tpu"], None),
    ("classify", ["{model}", "{image}", "--bogus"], None),
    ("extract", [], "Usage: extract-features.py [MODEL] [FILE]... | extract-features.py [MODEL] [BATCH_SIZE] "
                    "[DIRECTORY]"),
    ("extract", ["nomodel.t7", "{image}"], "Model file not found at nomodel.t7"),
    ("extract", ["{model}", "4", "nodir"], "directory not found: nodir"),
    ("extract", ["{model}", "4"], "batch mode takes MODEL BATCH_SIZE DIRECTORY, got 2 arguments"),
    ("extract", ["{model}", "0x0", "{dir}"], "BATCH_SIZE 0x0: must be a positive integer"),
    ("extract", ["{model}", "{image}", "-batchSize", "0"], "-batchSize 0: must be a positive integer"),
    ("extract", ["{model}", "{image}", "-o", "{dir}/no/f.t7"], None),
    ("classify", ["{cifar}", "{image}"], None),                   # a CIFAR net: not for 224x224 images
    ("extract", ["{model}", "2.5", "{dir}"], "BATCH_SIZE 2.5: must be a positive integer"),
    ("extract", ["{model}", "4", "{empty}"], None),
    ("extract", ["{image}", "{image}"], None),                     # not a .t7 model
])
def test_bad_arguments_give_one_line(tmp_path, capsys, script, args, message):
    Image.fromarray(_rgb(8, 8, 5)).save(tmp_path / "im.png")
    (tmp_path / "empty").mkdir()
    values = {"model": _model_path(), "image": str(tmp_path / "im.png"), "dir": str(tmp_path),
              "empty": str(tmp_path / "empty")}
    if "{cifar}" in args:
        values["cifar"] = _model_path("resnet_cifar10_d20_A")
    argv = [a.format(**values) for a in args]
    main = P.classify_main if script == "classify" else P.extract_main
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].strip()
    if message is not None:
        assert lines[0] == message
    assert not (tmp_path / "features.t7").exists()


# ---------------------------------------------------------------------------------------------
# The scripts as a user runs them: from another folder, in a subprocess


def _script(name: str, args: list[str], cwd) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, str(REPO_ROOT / "pretrained" / name), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_classify_script_from_another_folder(tmp_path, small_model):
    arr = _rgb(270, 256, 6)
    Image.fromarray(arr).save(tmp_path / "tall.png")
    proc = _script("classify.py", [_model_path(), "tall.png", "-device", "cpu"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.split("\n")
    assert lines[0] == "Classes for\ttall.png" and lines[6:] == ["", ""]
    assert all(re.fullmatch(r"[0-9.e-]+\t[^\t]+", line) for line in lines[1:6])
    _check_top(_parse_classify(proc.stdout)[0][1], torch.softmax(_forward(small_model, _by_hand(arr))[0], 0))


def test_extract_features_script_batch_mode(tmp_path, small_model):
    images = tmp_path / "images"
    images.mkdir()
    arrays = {"c.png": _rgb(256, 280, 7), "a.PNG": _rgb(300, 256, 8), "b.jpg": None}
    Image.fromarray(arrays["c.png"]).save(images / "c.png")
    Image.fromarray(arrays["a.PNG"]).save(images / "a.PNG", format="PNG")
    (images / "b.jpg").write_bytes(b"\xff\xd8broken")                # unreadable: reported, left out
    (images / "notes.txt").write_text("not an image")                  # filtered out
    (images / "sub.png").mkdir()                                       # a folder: filtered out
    proc = _script("extract-features.py", [_model_path(), "2", "images", "-device", "cpu"], tmp_path)
    assert proc.returncode == 1
    assert proc.stdout == "saved features to features.t7\n"
    err = proc.stderr.splitlines()
    assert err[0].startswith("Error reading: images/b.jpg (") and len(err) == 2
    saved = t7.load(tmp_path / "features.t7")
    assert set(saved) == {"features", "image_list"}
    assert list(saved["image_list"]) == ["images/a.PNG", "images/c.png"]     # sorted, filtered
    feats = saved["features"]
    linear = list(small_model.children())[-1]
    assert feats.dtype == torch.float32 and feats.shape == (2, linear.in_features)
    body = torch.nn.Sequential(*list(small_model.children())[:-1])
    for row, name in zip(feats, ["a.PNG", "c.png"]):
        expected = _forward(body, _by_hand(arrays[name]))[0]
        assert (row - expected).abs().max().item() < 1e-5
        logits = _forward(small_model, _by_hand(arrays[name]))[0]
        assert (linear(row) - logits).abs().max().item() < 1e-4
