from __future__ import annotations

import json
import os
import socket
import stat
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save as st_save

from tinydancer.errors import (
    InvalidInputError,
    ModelError,
    ModelFileError,
    ModelFormatError,
    ModelSchemaError,
    ModelValueError,
)
from tinydancer.model import CrateFastGRNN, FastGRNN, FastGRNNConfig, files, load_model


def sample_model(kind: str) -> FastGRNN:
    config = FastGRNNConfig(w_rank=2, u_rank=3) if kind == "low_rank" else FastGRNNConfig(timesteps=2)
    model = FastGRNN(config, seed=11)
    rng = np.random.default_rng(11)
    model.set_weights({k: (rng.standard_normal(v.shape) * 0.5).astype(np.float32) if v.ndim else v
                       for k, v in model.weights().items()})
    if kind in ("sparse", "sparse_int8"):
        model.prune(0.6)
    if kind in ("int8", "sparse_int8"):
        model.quantize()
    return model


def header_and_body(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def write_raw(path: Path, header: dict | str, body: bytes) -> None:
    text = header if isinstance(header, str) else json.dumps(header)
    raw = text.encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + body)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    path = tmp_path / "model.safetensors"
    sample_model("dense").save(path)
    return path


@pytest.mark.parametrize("kind", ["dense", "low_rank", "int8", "sparse", "sparse_int8"])
def test_round_trip_every_storage_form(tmp_path, kind):
    model = sample_model(kind)
    path = tmp_path / f"{kind}.safetensors"
    model.save(path)
    loaded = FastGRNN.load(str(path))
    assert isinstance(loaded, FastGRNN)
    assert loaded.config == model.config
    assert loaded.cell.W.kind == model.cell.W.kind and loaded.cell.U.kind == model.cell.U.kind
    assert loaded.size_bytes() == model.size_bytes()
    for key, value in model.parameters().items():
        np.testing.assert_array_equal(loaded.parameters()[key], value)
    shape = (10, 5) if model.config.timesteps == 1 else (10, 2, 5)
    X = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    np.testing.assert_array_equal(loaded.forward_batch(X), model.forward_batch(X))


@pytest.mark.parametrize("compress", ["quantize", "prune"])
def test_compressed_low_rank_model_round_trip(tmp_path, compress):
    model = sample_model("low_rank")
    if compress == "prune":
        model.prune(0.5)
    else:
        model.quantize()
    model.save(tmp_path / "m.safetensors")
    loaded = FastGRNN.load(tmp_path / "m.safetensors")
    assert loaded.config == model.config and loaded.config.w_rank == 2
    assert loaded.cell.W.kind == model.cell.W.kind != "low_rank"
    for key, value in model.parameters().items():
        np.testing.assert_array_equal(loaded.parameters()[key], value)


def test_file_metadata(saved):
    header, _ = header_and_body(saved)
    meta = header["__metadata__"]
    assert meta["format"] == "tinydancer-fastgrnn" and meta["format_version"] == "1"
    assert json.loads(meta["config"])["timesteps"] == 2
    assert json.loads(meta["storage"]) == {"W": "dense", "U": "dense"}
    assert meta["checksum"].startswith("sha256:")
    assert set(header) - {"__metadata__"} == {"W", "U", "b_z", "b_h", "w_out", "b_out", "zeta", "nu"}


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    sample_model("dense").save(path)
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", fail)
    with pytest.raises(ModelFileError, match="cannot be written"):
        sample_model("int8").save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]  # no temporary file left


def test_save_permissions(tmp_path):
    path = tmp_path / "m.safetensors"
    old = os.umask(0o022)
    try:
        sample_model("dense").save(path)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0o600
    path.chmod(0o640)
    sample_model("int8").save(path)
    assert path.stat().st_mode & 0o777 == 0o640  # a replaced file keeps its mode


def test_save_into_missing_folder(tmp_path):
    with pytest.raises(ModelFileError, match="the folder .*nope does not exist"):
        sample_model("dense").save(tmp_path / "nope" / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_save_through_a_symlink_writes_its_target(tmp_path):
    target = tmp_path / "real.safetensors"
    target.write_bytes(b"old")
    link = tmp_path / "link.safetensors"
    link.symlink_to(target)
    model = sample_model("dense")
    model.save(link)
    assert link.is_symlink() and link.resolve() == target
    assert FastGRNN.load(target).config == model.config
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.safetensors", "real.safetensors"]


@pytest.mark.parametrize("kind", ["fifo", "folder", "socket"])
def test_save_refuses_what_is_not_a_regular_file(tmp_path, kind):
    path = tmp_path / kind
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    else:
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
    before = os.lstat(path)
    with pytest.raises(ModelFileError, match=f"{kind}: is a .*, not a regular file; it was left untouched"):
        sample_model("dense").save(path)
    after = os.lstat(path)
    assert stat.S_IFMT(after.st_mode) == stat.S_IFMT(before.st_mode) and after.st_ino == before.st_ino
    assert sorted(p.name for p in tmp_path.iterdir()) == [kind]  # no temporary file left behind
    if kind == "socket":
        server.close()


def test_save_refuses_a_symlink_to_a_fifo(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    (tmp_path / "link").symlink_to(fifo)
    with pytest.raises(ModelFileError, match="is a FIFO"):
        sample_model("dense").save(tmp_path / "link")
    assert (tmp_path / "link").is_symlink() and stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="no such file"):
        FastGRNN.load(tmp_path / "absent.safetensors")


def test_directory(tmp_path):
    with pytest.raises(ModelFileError, match="is a directory"):
        FastGRNN.load(tmp_path)


def test_fifo_does_not_hang(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ModelFileError, match="not a regular file"):
        FastGRNN.load(fifo)


def test_not_a_path():
    with pytest.raises(ModelFileError, match="must be a string or path"):
        FastGRNN.load(42)


def test_unreadable(saved, monkeypatch):
    def denied(*args, **kwargs):  # chmod would not stop root, so the refusal is simulated
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(files.os, "open", denied)
    with pytest.raises(ModelFileError, match=r"cannot be opened \(Permission denied\)"):
        FastGRNN.load(saved)


def test_too_large(saved, monkeypatch):
    monkeypatch.setattr(files, "MAX_FILE_BYTES", 100)
    with pytest.raises(ModelFileError, match="over the 100-byte cap"):
        FastGRNN.load(saved)


@pytest.mark.parametrize("keep", [0, 5, 8, 40, -1])
def test_truncated(saved, keep):
    data = saved.read_bytes()
    saved.write_bytes(data[:keep] if keep >= 0 else data[:-3])
    with pytest.raises(ModelFormatError):
        FastGRNN.load(saved)


def test_zeroed_data_fails_the_checksum(saved):
    header, body = header_and_body(saved)
    write_raw(saved, header, bytes(len(body)))
    with pytest.raises(ModelFormatError, match="does not match its checksum"):
        FastGRNN.load(saved)


def test_flipped_byte_fails_the_checksum(saved):
    data = bytearray(saved.read_bytes())
    data[-5] ^= 0x01
    saved.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="checksum"):
        FastGRNN.load(saved)


def test_header_cap(saved, monkeypatch):
    monkeypatch.setattr(files, "MAX_HEADER_BYTES", 64)
    with pytest.raises(ModelFormatError, match="header of .* bytes is over"):
        FastGRNN.load(saved)


def test_header_not_json(tmp_path):
    path = tmp_path / "m.safetensors"
    write_raw(path, "{not json", b"")
    with pytest.raises(ModelFormatError, match="not valid JSON"):
        FastGRNN.load(path)
    write_raw(path, "[1, 2]", b"")
    with pytest.raises(ModelFormatError, match="not a JSON object"):
        FastGRNN.load(path)


def test_duplicate_names(saved):
    header, body = header_and_body(saved)
    text = json.dumps(header)
    entry = json.dumps(header["b_z"])
    text = text[:-1] + f', "b_z": {entry}}}'
    write_raw(saved, text, body)
    with pytest.raises(ModelFormatError, match="names 'b_z' twice"):
        FastGRNN.load(saved)


def test_too_many_tensors(tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(st_save({f"t{i}": np.zeros(1, np.float32) for i in range(65)}, metadata={"format": "x"}))
    with pytest.raises(ModelFormatError, match="65 tensors is over the cap of 64"):
        FastGRNN.load(path)


def resave(path: Path, change_tensors=None, change_meta=None, fix_checksum=True) -> None:
    """Rewrite a valid file with some tensors or metadata changed (and a fresh checksum unless told not to)."""
    from safetensors.numpy import load_file

    tensors = load_file(str(path))
    header, _ = header_and_body(path)
    meta = dict(header["__metadata__"])
    if change_tensors:
        change_tensors(tensors)
    if change_meta:
        change_meta(meta)
    if fix_checksum:
        meta["checksum"] = files.checksum(tensors)
    path.write_bytes(st_save(tensors, metadata=meta))


def test_bf16_weights(saved):
    header, body = header_and_body(saved)
    header["b_out"]["dtype"] = "BF16"
    header["b_out"]["shape"] = [2]
    write_raw(saved, header, body)
    with pytest.raises(ModelSchemaError, match="'b_out' has dtype BF16"):
        FastGRNN.load(saved)


def test_f64_weights(saved):
    resave(saved, lambda t: t.update(W=t["W"].astype(np.float64)))
    with pytest.raises(ModelSchemaError, match="dtype F64"):
        FastGRNN.load(saved)


def test_nan_weights(saved):
    def poison(t):
        t["U"][3, 4] = np.nan

    resave(saved, poison)
    with pytest.raises(ModelValueError, match="'U' holds NaN"):
        FastGRNN.load(saved)


def test_inf_scalar(saved):
    resave(saved, lambda t: t.update(zeta=np.array(np.inf, np.float32)))
    with pytest.raises(ModelValueError, match="'zeta'"):
        FastGRNN.load(saved)


def test_wrong_shape(saved):
    resave(saved, lambda t: t.update(W=np.zeros((8, 4), np.float32)))
    with pytest.raises(ModelSchemaError, match=r"'W' has shape \[8, 4\], expected \[8, 5\]"):
        FastGRNN.load(saved)


def test_missing_and_extra_tensors(saved):
    resave(saved, lambda t: (t.pop("b_h"), t.update(extra=np.zeros(1, np.float32))))
    with pytest.raises(ModelSchemaError, match=r"missing tensors \['b_h'\], unexpected tensors \['extra'\]"):
        FastGRNN.load(saved)


def test_config_disagrees_with_tensors(saved):
    def wider(meta):
        config = json.loads(meta["config"])
        config["hidden_dim"] = 9
        meta["config"] = json.dumps(config)

    resave(saved, change_meta=wider)
    with pytest.raises(ModelSchemaError, match="has shape"):
        FastGRNN.load(saved)


@pytest.mark.parametrize(
    "change, error, match",
    [
        (lambda m: m.update(format_version="2"), ModelFormatError, "format version 2; this tinydancer reads up to 1"),
        (lambda m: m.update(format_version="one"), ModelFormatError, "not a whole number"),
        (lambda m: m.update(format="something-else"), ModelFormatError, "unknown model format 'something-else'"),
        (lambda m: m.pop("format"), ModelFormatError, "unknown model format None"),
        (lambda m: m.update(config="{"), ModelSchemaError, "not valid JSON"),
        (lambda m: m.update(config='{"input_dim": 0}'), ModelSchemaError, "bad config"),
        (lambda m: m.pop("config"), ModelSchemaError, "no 'config'"),
        (lambda m: m.update(storage='{"W": "dense", "U": "fancy"}'), ModelSchemaError, "storage must give"),
        (lambda m: m.update(storage='{"W": "low_rank", "U": "dense"}'), ModelSchemaError, "config's rank is None"),
        (lambda m: m.pop("checksum"), ModelSchemaError, "no 'checksum'"),
    ],
)
def test_bad_metadata(saved, change, error, match):
    resave(saved, change_meta=change, fix_checksum=False)
    with pytest.raises(error, match=match):
        FastGRNN.load(saved)


def test_bad_csr_structure(tmp_path):
    path = tmp_path / "m.safetensors"
    sample_model("sparse").save(path)

    def scramble(t):
        t["W.indices"][0] = 99

    resave(path, scramble)
    with pytest.raises(ModelSchemaError, match="CSR matrix"):
        FastGRNN.load(path)


def test_record_round_trip_without_a_model():
    tensors = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, -2], np.int8)}
    data = files.save(files.ModelRecord(files.FORMAT, {"note": "anything"}, tensors))
    record = files.load(data, "mem")
    assert record.format == files.FORMAT and dict(record.metadata) == {"note": "anything"}
    with pytest.raises(ModelSchemaError, match=r"mem: __metadata__\['note'\] is not valid JSON"):
        record.json("note")
    for name, value in tensors.items():
        np.testing.assert_array_equal(record.tensors[name], value)
        assert record.tensors[name].dtype == value.dtype
    (n,) = struct.unpack("<Q", data[:8])
    meta = json.loads(data[8 : 8 + n])["__metadata__"]
    assert meta["format_version"] == str(files.FORMAT_VERSION) and meta["checksum"] == files.checksum(tensors)
    crate = files.load(files.save(files.ModelRecord(files.CRATE_FORMAT, {"config": "{}"}, tensors)))
    assert crate.format == files.CRATE_FORMAT and dict(crate.metadata) == {"config": "{}"}


@pytest.mark.parametrize("metadata", [{"checksum": "sha256:0"}, {"format": "x"}, {"format_version": "9"}])
def test_record_cannot_set_the_file_keys(metadata):
    with pytest.raises(InvalidInputError, match="written by tinydancer.model.files"):
        files.save(files.ModelRecord(files.FORMAT, metadata, {"a": np.zeros(1, np.float32)}))


def test_record_of_an_unknown_format_is_not_written():
    with pytest.raises(InvalidInputError, match="unknown model format 'other'"):
        files.save(files.ModelRecord("other", {}, {"a": np.zeros(1, np.float32)}))


def test_every_error_is_a_model_error():
    for cls in (ModelFileError, ModelFormatError, ModelSchemaError, ModelValueError):
        assert issubclass(cls, ModelError)


# --------------------------------------------------------------------------------------------------------
# The crate's format
# --------------------------------------------------------------------------------------------------------


def crate_file(path: Path, rng: np.random.Generator, h: int = 8, i: int = 5, o: int = 1, nu: float = 1.3,
               zeta: float = 0.7) -> dict[str, np.ndarray]:
    tensors = {
        "w_reset": rng.uniform(-1, 1, (h, i)), "w_update": rng.uniform(-1, 1, (h, i)),
        "w_candidate": rng.uniform(-1, 1, (h, i)), "w_recurrent": rng.uniform(-1, 1, (h, h)),
        "w_output": rng.uniform(-1, 1, (o, h)), "b_reset": rng.uniform(-1, 1, h), "b_update": rng.uniform(-1, 1, h),
        "b_candidate": rng.uniform(-1, 1, h), "b_output": rng.uniform(-1, 1, o),
    }
    tensors = {k: v.astype(np.float32) for k, v in tensors.items()}
    config = {"input_dim": i, "hidden_dim": h, "output_dim": o, "nu": nu, "zeta": zeta, "rank": 4}
    path.write_bytes(st_save(tensors, metadata={"format": "ruvector-tiny-dancer-fastgrnn-v1",
                                                "config": json.dumps(config)}))
    return tensors


def crate_equations(t, x, nu, zeta, h0):
    """The crate's forward pass, written from its equations in float64."""
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    t = {k: v.astype(np.float64) for k, v in t.items()}
    r = sig(nu * (t["w_reset"] @ x + t["b_reset"]))
    u = sig(nu * (t["w_update"] @ x + t["b_update"]))
    c = np.tanh(zeta * (t["w_candidate"] @ x + t["w_recurrent"] @ (r * h0) + t["b_candidate"]))
    h = u * h0 + (1 - u) * c
    return sig((t["w_output"] @ h + t["b_output"])[0])


def test_crate_file_loads_and_matches_its_equations(tmp_path):
    rng = np.random.default_rng(5)
    path = tmp_path / "crate.safetensors"
    tensors = crate_file(path, rng)
    model = FastGRNN.load(path)
    assert isinstance(model, CrateFastGRNN)
    X = rng.standard_normal((30, 5)).astype(np.float32)
    h0 = rng.standard_normal(8)
    for x in X:
        assert model.forward(x) == pytest.approx(crate_equations(tensors, x, 1.3, 0.7, np.zeros(8)), abs=1e-6)
        assert model.forward(x, h0) == pytest.approx(crate_equations(tensors, x, 1.3, 0.7, h0), abs=1e-6)
    np.testing.assert_allclose(model.forward_batch(X), [model.forward(x) for x in X], atol=1e-7)
    # and back out in the crate's format
    again = tmp_path / "again.safetensors"
    model.save(again)
    reloaded = load_model(again)
    np.testing.assert_array_equal(reloaded.forward_batch(X), model.forward_batch(X))


@pytest.mark.parametrize(
    "breaker, error, match",
    [
        (lambda t, c: t.pop("w_recurrent"), ModelSchemaError, r"missing tensors \['w_recurrent'\]"),
        (lambda t, c: t.update(w_output=np.zeros((1, 7), np.float32)), ModelSchemaError, "'w_output' has shape"),
        (lambda t, c: t["b_update"].__setitem__(0, np.nan), ModelValueError, "'b_update' holds NaN"),
        (lambda t, c: c.update(hidden_dim=0), ModelSchemaError, "config hidden_dim must be"),
        (lambda t, c: c.update(nu="x"), ModelSchemaError, "config nu must be"),
    ],
)
def test_bad_crate_files(tmp_path, breaker, error, match):
    rng = np.random.default_rng(6)
    path = tmp_path / "crate.safetensors"
    tensors = crate_file(path, rng)
    config = {"input_dim": 5, "hidden_dim": 8, "output_dim": 1, "nu": 1.0, "zeta": 1.0, "rank": None}
    breaker(tensors, config)
    path.write_bytes(st_save(tensors, metadata={"format": "ruvector-tiny-dancer-fastgrnn-v1",
                                                "config": json.dumps(config)}))
    with pytest.raises(error, match=match):
        FastGRNN.load(path)


def test_crate_model_input_errors(tmp_path):
    path = tmp_path / "crate.safetensors"
    crate_file(path, np.random.default_rng(7))
    model = FastGRNN.load(path)
    with pytest.raises(InvalidInputError, match=r"X must have shape \(batch, 5\)"):
        model.forward_batch(np.ones((2, 4)))
    with pytest.raises(InvalidInputError, match="NaN"):
        model.forward([np.nan] * 5)
