"""Generators of hostile files, made by the tests themselves (nothing is downloaded).

Every pickle payload here would create a marker file if it were ever executed; the tests assert that the marker
never appears. `live_payload_checks` proves the payloads are real by executing copies aimed at another path.
"""

from __future__ import annotations

import io
import pickle
import random
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest


class Payload:
    """Unpickling this calls open(marker, "w"): the file appears only if the pickle is executed."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def tiny_onnx(opset: int = 17):
    """x [N, 4] float -> MatMul with W [4, 3] -> y [N, 3]: a valid model to corrupt."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3) / 10, "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"], name="matmul")], "tiny",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _external(tensor, location: str) -> None:
    from onnx import TensorProto

    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "48")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def _external_in_subgraph(location: str) -> bytes:
    """An If node whose then-branch holds an initializer stored outside the file."""
    from onnx import TensorProto, helper, numpy_helper

    inner_weight = numpy_helper.from_array(np.ones((4, 3), np.float32), "W_inner")
    _external(inner_weight, location)
    branch = helper.make_graph([helper.make_node("MatMul", ["x", "W_inner"], ["t"])], "then",
                               [], [helper.make_tensor_value_info("t", TensorProto.FLOAT, ["N", 3])], [inner_weight])
    other = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["e"])], "else",
                              [], [helper.make_tensor_value_info("e", TensorProto.FLOAT, ["N", 3])])
    model = tiny_onnx()
    cond = numpy_helper.from_array(np.array(True), "cond")
    model.graph.initializer.append(cond)
    del model.graph.node[:]
    model.graph.node.append(helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=other))
    return model.SerializeToString()


def _external_in_function(location: str) -> bytes:
    """A model-local function whose body has a Constant stored outside the file."""
    from onnx import helper, numpy_helper

    constant = numpy_helper.from_array(np.ones((4, 3), np.float32), "c")
    _external(constant, location)
    body = [helper.make_node("Constant", [], ["w"], value=constant), helper.make_node("MatMul", ["a", "w"], ["b"])]
    function = helper.make_function("local", "Project", ["a"], ["b"], body, [helper.make_opsetid("", 17)])
    model = tiny_onnx()
    model.opset_import.append(helper.make_opsetid("local", 1))
    model.functions.append(function)
    del model.graph.node[:]
    model.graph.node.append(helper.make_node("Project", ["x"], ["y"], domain="local"))
    return model.SerializeToString()


def _constant_of_shape_terabytes() -> bytes:
    """A ConstantOfShape asking for 2**20 x 2**20 float32 values: 4 TiB, if anyone allocated it."""
    from onnx import TensorProto, helper, numpy_helper

    model = tiny_onnx()
    shape = numpy_helper.from_array(np.array([2**20, 2**20], dtype=np.int64), "big_shape")
    model.graph.initializer.append(shape)
    model.graph.node.append(helper.make_node("ConstantOfShape", ["big_shape"], ["big"], name="bomb",
                                             value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])))
    model.graph.output.append(helper.make_tensor_value_info("big", TensorProto.FLOAT, None))
    return model.SerializeToString()


def _huge_initializer_dims() -> bytes:
    """An initializer declaring (2**31 - 1) x (2**31 - 1) floats and holding none."""
    model = tiny_onnx()
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    weight.ClearField("float_data")
    weight.dims[:] = [2**31 - 1, 2**31 - 1]
    return model.SerializeToString()


def _torch_payload(marker: Path, legacy: bool) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save({"net.1.weight": torch.zeros(2), "evil": Payload(marker)}, buffer,
               _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


def _whole_module() -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)), buffer)
    return buffer.getvalue()


def _torchscript() -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Linear(4, 3)), buffer)
    return buffer.getvalue()


def _npz_payload(marker: Path) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.array([Payload(marker), 1], dtype=object))
    return buffer.getvalue()


def _npz_bomb() -> bytes:
    """A 2-KiB NPZ whose member header declares 2**40 float64 values."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (2**40,)})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("x.npy", header.getvalue() + b"\0" * 1024)
    return buffer.getvalue()


@dataclass(frozen=True)
class Hostile:
    """A crafted file: where it is, what kind of input it poses as, and the words its refusal must contain."""

    name: str
    path: Path
    role: str  # "model" or "data"
    words: tuple = ()


@pytest.fixture(scope="session")
def hostile_dir(tmp_path_factory):
    """Write every hostile file once per session; return (directory, {name: Hostile}, marker, secret)."""
    root = tmp_path_factory.mktemp("hostile")
    marker = root / "PWNED"  # every payload would create this
    secret = root / "secret.bin"
    secret.write_bytes(b"TOP-SECRET-" * 8)
    (root / "weights.bin").symlink_to(secret)
    valid = tiny_onnx().SerializeToString()
    rng = random.Random(1234)
    files: dict[str, tuple[bytes, str, tuple]] = {}

    def external_model(location):
        model = tiny_onnx()
        _external(model.graph.initializer[0], location)
        return model.SerializeToString()

    files["ext_dotdot.onnx"] = (external_model("../secret.bin"), "model", ("outside the file",))
    files["ext_subdir_dotdot.onnx"] = (external_model("sub/../../secret.bin"), "model", ("outside the file",))
    files["ext_absolute.onnx"] = (external_model(str(secret)), "model", ("outside the file",))
    files["ext_symlink.onnx"] = (external_model("weights.bin"), "model", ("outside the file",))
    files["ext_in_subgraph.onnx"] = (_external_in_subgraph("../secret.bin"), "model", ("outside the file",))
    files["ext_in_function.onnx"] = (_external_in_function("../secret.bin"), "model", ("outside the file",))
    files["constant_of_shape_4tib.onnx"] = (_constant_of_shape_terabytes(), "model", ("elements",))
    files["huge_initializer_dims.onnx"] = (_huge_initializer_dims(), "model", ("elements",))
    files["empty.onnx"] = (b"", "model", ("empty",))
    files["truncated.onnx"] = (valid[: len(valid) * 2 // 3], "model", ("not",))
    files["random_bytes.onnx"] = (bytes(rng.getrandbits(8) for _ in range(4096)), "model", ("not",))
    files["text.onnx"] = (b"this is a text file, not a model\n" * 20, "model", ("not an ONNX model",))
    files["payload_zip.pt"] = (_torch_payload(marker, legacy=False), "model", ("refused",))
    files["payload_zip.pth"] = (_torch_payload(marker, legacy=False), "model", ("refused",))
    files["payload_legacy.pt"] = (_torch_payload(marker, legacy=True), "model", ("refused",))
    files["payload_legacy.pth"] = (_torch_payload(marker, legacy=True), "model", ("refused",))
    files["raw_pickle.pt"] = (pickle.dumps(Payload(marker), protocol=4), "model", ("refused",))
    files["whole_module.pt"] = (_whole_module(), "model", ("whole pickled model", "ONNX"))
    files["torchscript.pt"] = (_torchscript(), "model", ("TorchScript",))
    files["garbage.safetensors"] = (bytes(rng.getrandbits(8) for _ in range(512)), "model", ("safetensors",))
    files["model.txt"] = (valid, "model", ("unsupported model file type",))
    files["model_no_extension"] = (valid, "model", ("unsupported model file type",))
    files["payload.pkl"] = (pickle.dumps(Payload(marker)), "model", ("pickle",))
    files["data_as_model.npz"] = (_npz_payload(marker), "model", ("unsupported model file type",))
    files["payload.npz"] = (_npz_payload(marker), "data", ("Python objects",))
    files["npz_bomb.npz"] = (_npz_bomb(), "data", ("declares shape",))
    files["nan.csv"] = (b"a,b,c,d\n1,2,3,4\n1,nan,3,inf\n5,6,7,8\n", "data", ("NaN",))
    files["extra_column.csv"] = (b"a,b,c,d\n1,2,3,4\n1,2,3,4,5\n5,6,7,8\n", "data", ("fields",))
    files["missing_column.csv"] = (b"a,b,c\n1,2,3\n4,5,6\n7,8,9\n", "data", ("3 feature column",))
    hostile = {}
    for name, (content, role, words) in files.items():
        path = root / name
        path.write_bytes(content)
        hostile[name] = Hostile(name, path, role, words)
    (root / "tiny.onnx").write_bytes(valid)
    return root, hostile, marker, secret


@pytest.fixture(scope="session")
def refusal_log():
    """(test, wall s, worker peak MiB) of every isolated refusal; the worst are printed at the end (-s shows
    them; RELIABILITY.md quotes them)."""
    rows: list = []
    yield rows
    if rows:
        slowest = max(rows, key=lambda r: r[1])
        largest = max(rows, key=lambda r: r[2])
        print(f"\nisolated refusals: {len(rows)}; slowest {slowest[0]} {slowest[1]:.2f} s; "
              f"largest worker {largest[0]} {largest[2]:.0f} MiB")


@pytest.fixture(scope="session")
def hostile_files(hostile_dir):
    return hostile_dir[1]


@pytest.fixture(scope="session")
def payload_marker(hostile_dir):
    return hostile_dir[2]


@pytest.fixture(scope="session")
def torch_payload():
    """make(marker, legacy) -> bytes of a .pt whose unpickling would create `marker`."""
    return _torch_payload


@pytest.fixture(scope="session")
def live_payloads():
    """make(tmp_path) -> [(kind, bytes, marker, unsafe_load)]: the payloads aimed at fresh markers, with the
    unsafe loader that would execute them (to prove the hostile files are real)."""

    def make(tmp_path: Path):
        import torch

        def torch_unsafe(data):
            torch.load(io.BytesIO(data), weights_only=False)

        def npz_unsafe(data):
            with np.load(io.BytesIO(data), allow_pickle=True) as npz:
                npz["x"]

        rows = []
        for kind in ("pickle", "torch-zip", "torch-legacy", "npz"):
            marker = tmp_path / f"LIVE-{kind}"
            if kind == "pickle":
                rows.append((kind, pickle.dumps(Payload(marker)), marker, pickle.loads))
            elif kind == "npz":
                rows.append((kind, _npz_payload(marker), marker, npz_unsafe))
            else:
                rows.append((kind, _torch_payload(marker, kind == "torch-legacy"), marker, torch_unsafe))
        return rows

    return make


@pytest.fixture(scope="session")
def tiny_model_path(hostile_dir) -> Path:
    """A valid, torch-free ONNX model file (for --data tests that must not need torch)."""
    return hostile_dir[0] / "tiny.onnx"


@pytest.fixture(scope="session")
def valid_files():
    """Valid bytes of each accepted format, for the property tests to mutate."""
    import torch
    from safetensors.torch import save as save_safetensors

    from sample_models import SAMPLE_MODELS

    state = SAMPLE_MODELS["digits-mlp"].build(1.0).state_dict()
    zipped, legacy = io.BytesIO(), io.BytesIO()
    torch.save(state, zipped)
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    npz = io.BytesIO()
    rng = np.random.default_rng(0)
    np.savez(npz, x=rng.random((12, 4), dtype=np.float32), y=np.arange(12) % 3)
    csv = "a,b,c,d,label\n" + "\n".join(f"{i},{i + 1},{i * 2},0.5,{i % 3}" for i in range(12)) + "\n"
    return {".onnx": tiny_onnx().SerializeToString(), ".pt": zipped.getvalue(), ".pth": legacy.getvalue(),
            ".safetensors": save_safetensors({k: v.contiguous() for k, v in state.items()}),
            ".npz": npz.getvalue(), ".csv": csv.encode()}


@pytest.fixture(scope="session")
def tiny_model():
    """The tiny ONNX model loaded (input x [N, 4]), for data binding tests without torch."""
    from core.io.graph import Model

    return Model("tiny.onnx", tiny_onnx())


# --------------------------------------------------------------------------------------------------------------
# Hostile decoder zips and safetensors headers (issue 25): each must be refused without leaving a byte on disk.


def _lfh(name: bytes, crc: int, compressed: int, size: int, method: int = 8) -> bytes:
    """A zip local file header (no extra field)."""
    import struct

    return struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, compressed, size, len(name), 0) \
        + name


def _central(name: bytes, crc: int, compressed: int, size: int, offset: int, method: int = 8) -> bytes:
    import struct

    return struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, compressed, size,
                       len(name), 0, 0, 0, 0, 0, offset) + name


def _end_of_directory(count: int, size: int, offset: int) -> bytes:
    import struct

    return struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, size, offset, 0)


def _raw_deflate(data: bytes) -> bytes:
    import zlib

    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    return packer.compress(data) + packer.flush()


def sprinkled_bytes(size: int, every: int, seed: int = 0) -> bytes:
    """`size` zero bytes with a random byte every `every` bytes: deflate packs 8 MiB of it ~190x at every=700,
    just under a 200x ratio cap (measured with zlib level 9)."""
    rng = random.Random(seed)
    data = bytearray(size)
    for i in range(0, size, every):
        data[i] = rng.randrange(1, 256)
    return bytes(data)


def overlapping_zip(plain: dict, count: int, kernel: bytes, stem: str = "model") -> bytes:
    """A zip whose last `count` entries overlap (David Fifield's quoted-DEFLATE construction, "A better zip bomb",
    2019): entry i's compressed data is a stored block quoting entry i+1's local header, then entry i+1's data, so
    every entry decompresses to the whole kernel (plus the headers it quotes) while the file holds it once.
    `plain` files come first, stored normally. Python 3.11's zipfile reads it without complaint."""
    import struct
    import zlib

    body, directory = bytearray(), bytearray()
    for name, data in plain.items():
        packed = _raw_deflate(data)
        crc = zlib.crc32(data)
        directory += _central(name.encode(), crc, len(packed), len(data), len(body))
        body += _lfh(name.encode(), crc, len(packed), len(data)) + packed
    names = [f"{stem}-{i + 1:05d}-of-{count:05d}.safetensors".encode() for i in range(count)]
    packed_kernel = _raw_deflate(kernel)
    headers, sizes = [None] * count, [None] * count  # local header; (crc, compressed, size) per entry
    content, compressed = kernel, len(packed_kernel)
    for i in reversed(range(count)):
        if i < count - 1:
            quoted = headers[i + 1]
            content = quoted + content
            compressed = 5 + len(quoted) + compressed
        sizes[i] = (zlib.crc32(content), compressed, len(content))
        headers[i] = _lfh(names[i], *sizes[i])
    for i in range(count):
        directory += _central(names[i], *sizes[i], len(body))
        body += headers[i]
        if i < count - 1:
            body += b"\x00" + struct.pack("<HH", len(headers[i + 1]), len(headers[i + 1]) ^ 0xFFFF)
    body += packed_kernel
    return bytes(body + directory + _end_of_directory(len(plain) + count, len(directory), len(body)))


def zip_files(files: dict, folder: str = "my-model") -> bytes:
    """Files zipped (deflated) in one folder, as `zip -r` stores a checkpoint folder."""
    import warnings

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a duplicate name is what one of the hostile zips is for
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
            for name, data in (files.items() if isinstance(files, dict) else files):
                archive.writestr(f"{folder}/{name}" if folder else name, data)
    return buffer.getvalue()


def patch_entry(data: bytes, name: str, *, crc: int | None = None, size: int | None = None) -> bytes:
    """Rewrite an entry's CRC-32 and/or declared uncompressed size in both its local and central headers."""
    import struct

    out = bytearray(data)
    for signature, crc_at, size_at, name_len_at, name_at in ((b"PK\x03\x04", 14, 22, 26, 30),
                                                             (b"PK\x01\x02", 16, 24, 28, 46)):
        start = 0
        while (start := out.find(signature, start)) >= 0:
            length = struct.unpack_from("<H", out, start + name_len_at)[0]
            if out[start + name_at:start + name_at + length].decode(errors="replace").endswith(name):
                if crc is not None:
                    struct.pack_into("<I", out, start + crc_at, crc)
                if size is not None:
                    struct.pack_into("<I", out, start + size_at, size)
            start += 4
    return bytes(out)


def many_tensor_safetensors(count: int, *, name_width: int = 0) -> bytes:
    """A valid safetensors file of `count` one-float tensors: a header of ~60-70 bytes per tensor (450,000 of them
    make a ~30 MiB header, as a probe's upload had)."""
    import json

    header = {f"model.layers.{i}.weight{'x' * name_width}": {"dtype": "F32", "shape": [1],
                                                             "data_offsets": [4 * i, 4 * i + 4]}
              for i in range(count)}
    text = json.dumps(header, separators=(",", ":")).encode()
    return len(text).to_bytes(8, "little") + text + b"\x00" * (4 * count)


def tiny_lm_files(**config_changes) -> dict:
    """The bundled tiny-lm checkpoint's files (a valid Llama folder, 9.6 MB of weights), config edited."""
    import json

    from sample_models import tiny_lm

    folder = tiny_lm.CHECKPOINT_DIR
    config = json.loads((folder / "config.json").read_text())
    config.update(config_changes)
    return {"config.json": json.dumps(config).encode(),
            "model.safetensors": (folder / "model.safetensors").read_bytes(),
            "tokenizer.json": (folder / "tokenizer.json").read_bytes(),
            "tokenizer_config.json": (folder / "tokenizer_config.json").read_bytes()}


@pytest.fixture(scope="session")
def hostile_zips() -> dict:
    """name -> (zip bytes, words its one-line refusal must contain): 20 checkpoints a visitor might upload, each
    refused. The first two are the probe's disk fillers (~500 MiB and 64 MiB once extracted), the third its bad-CRC
    zip that left a staging folder behind."""
    import json
    import zlib

    good = tiny_lm_files()
    config, tokenizer = good["config.json"], good["tokenizer.json"]
    small = {"config.json": config, "tokenizer.json": tokenizer}
    weights = good["model.safetensors"]
    bogus = sprinkled_bytes(64 * 2**20, 700, seed=1)  # its first 8 bytes declare no sane header
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    outside = json.dumps({"w": {"dtype": "F32", "shape": [2**20], "data_offsets": [0, 2**22]}}).encode()
    fp8 = json.dumps({"w": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]}}).encode()
    valid = zip_files(good)
    evil_tokenizer = json.loads(good["tokenizer_config.json"])
    evil_tokenizer["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
    zips = {
        "overlap_62x8mib.zip": (overlapping_zip(small, 62, sprinkled_bytes(8 * 2**20, 700)), ("overlap",)),
        "ratio_190x.zip": (zip_files({**small, "model.safetensors": bogus}), ("not a valid safetensors",)),
        "bad_crc.zip": (patch_entry(valid, "model.safetensors", crc=zlib.crc32(weights) ^ 1), ("CRC",)),
        "size_lie.zip": (patch_entry(valid, "model.safetensors", size=len(weights) // 2), ("model.safetensors",)),
        "bogus_header.zip": (zip_files({**small, "model.safetensors": b"\xff" * 8 + b"{" * 4096}),
                             ("not a valid safetensors",)),
        "tensors_300k.zip": (zip_files({**small, "model.safetensors": many_tensor_safetensors(300_000)}),
                             ("header",)),
        "tensors_100k.zip": (zip_files({**small, "model.safetensors": many_tensor_safetensors(100_000)}),
                             ("tensors",)),
        "tokenizer_auto_map.zip": (zip_files({**good, "tokenizer_config.json": json.dumps(evil_tokenizer)}),
                                   ("remote code",)),
        "config_auto_map.zip": (zip_files(tiny_lm_files(auto_map={"AutoModelForCausalLM": "m.Evil"})),
                                ("remote code",)),
        "dotdot.zip": (zip_files({"config.json": config, "../model.safetensors": weights}, folder=""),
                       ("top level",)),
        "nested.zip": (zip_files({"config.json": config, "sub/model.safetensors": weights}, folder=""),
                       ("top level",)),
        "code.zip": (zip_files({**good, "modeling_evil.py": b"import os\n"}), ("code",)),
        "pickle.zip": (zip_files({**small, "pytorch_model.bin": b"\x80\x04N."}), ("pickle",)),
        "too_many_files.zip": (zip_files({**good, **{f"extra{i}.safetensors": header + b"\0" * 16
                                                     for i in range(64)}}), ("files; the limit",)),
        "no_tokenizer.zip": (zip_files({"config.json": config, "model.safetensors": weights}), ("tokenizer.json",)),
        "offsets_outside.zip": (zip_files({**small, "model.safetensors": len(outside).to_bytes(8, "little")
                                           + outside + b"\0" * 16}), ("does not match its bytes",)),
        "duplicate_names.zip": (zip_files([("config.json", config), ("tokenizer.json", tokenizer),
                                           ("model.safetensors", weights), ("model.safetensors", bogus[:2**20])]),
                                ("twice",)),
        "fp8.zip": (zip_files({**small, "model.safetensors": len(fp8).to_bytes(8, "little") + fp8 + b"\0" * 4}),
                    ("F8_E4M3",)),
        "unsupported_arch.zip": (zip_files(tiny_lm_files(architectures=["EvilForCausalLM"])), ("not supported",)),
        "not_a_zip.zip": (bytes(random.Random(7).getrandbits(8) for _ in range(4096)), ("not a zip",)),
    }
    assert len(zips) == 20
    return zips
