"""Text in, decision out: QueryRouter.route_text / route_texts and ``tinydancer route --text``, with a stand-in
embedder (the real one, the [embed] extra, is tested in test_embed.py)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from tinydancer import cli, embed
from tinydancer.errors import InvalidInputError
from tinydancer.query_router import QueryRouter


class FakeEmbedder:
    """Deterministic unit vectors of dimension 384 from the text's hash; records what it was asked."""

    def __init__(self) -> None:
        self.calls: list[object] = []

    def embed(self, texts):
        self.calls.append(texts)
        one = isinstance(texts, str)
        rows = [texts] if one else texts
        out = np.empty((len(rows), 384), np.float32)
        for i, t in enumerate(rows):
            if not isinstance(t, str) or not t:
                raise InvalidInputError(f"texts[{i}] must be a non-empty str")
            v = np.random.default_rng(abs(hash(t)) % 2**32).standard_normal(384)
            out[i] = v / np.linalg.norm(v)
        return out[0] if one else out


@pytest.fixture
def fake(monkeypatch) -> FakeEmbedder:
    f = FakeEmbedder()
    monkeypatch.setattr(embed, "embed", f.embed)
    return f


def test_route_text_embeds_and_passes_the_prompt_length(fake):
    router = QueryRouter.default()
    text = "What is the capital of France?"
    d = router.route_text(text)
    e = fake.embed(text)
    assert d == router.route(e, prompt_length=len(text))
    assert fake.calls[0] == text


def test_route_texts_is_the_batch_of_route_text(fake):
    router = QueryRouter.default()
    texts = ["short", "a much longer prompt " * 20, "What is 7 times 8?"]
    batch = router.route_texts(texts)
    assert len(batch) == 3
    for i, t in enumerate(texts):
        assert batch.decision(i) == router.route_text(t)
    with pytest.raises(InvalidInputError, match="texts must be a list of str"):
        router.route_texts("one string")


def test_an_explicit_embedder_is_used():
    f = FakeEmbedder()
    QueryRouter.default().route_text("hello", embedder=f)
    assert f.calls == ["hello"]


def test_a_router_of_another_dimension_cannot_route_text():
    rng = np.random.default_rng(0)
    E = rng.standard_normal((200, 8)).astype(np.float32)
    r = QueryRouter.fit(E, strong=rng.random(200) > 0.3, weak=rng.random(200) > 0.5)
    with pytest.raises(InvalidInputError, match="reads 8-d embeddings; route_text embeds prompts with all-MiniLM"):
        r.route_text("hello", embedder=FakeEmbedder())


def test_cli_route_text(fake, capsys):
    assert cli.main(["route", "--text", "What is the capital of France?"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"use_lightweight", "confidence", "uncertainty", "expected_gain", "threshold", "certified",
                        "request_id"}
    assert out["certified"] is True and 0.0 <= out["confidence"] <= 1.0


def test_cli_route_text_lines_from_stdin(fake, monkeypatch, capsys):
    lines = ['"What is 2 + 2?"', "", json.dumps({"prompt": "Name a prime above 100."}), '"Explain entropy."']
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n"))
    assert cli.main(["route", "--text", "-"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(out) == 3
    router = QueryRouter.default()
    assert out[1] == router.route_text("Name a prime above 100.").to_dict()


@pytest.mark.parametrize("stdin, message", [
    ('{"text": "x"}\n', "line 1: a prompt must be a JSON string"),
    ('"ok"\nnot json\n', "line 2: not JSON"),
    ("\n\n", "standard input holds no prompt"),
])
def test_cli_route_text_bad_lines(fake, monkeypatch, capsys, stdin, message):
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    assert cli.main(["route", "--text", "-"]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_cli_route_text_refuses_mixed_options(fake, capsys):
    assert cli.main(["route", "request.json", "--text", "hi"]) == 1
    assert "give no request file or --model" in capsys.readouterr().err
    assert cli.main(["route", "--query-model", "q.safetensors"]) == 1
    assert "--query-model goes with --text" in capsys.readouterr().err


@pytest.mark.parametrize("text, message", [("", "text is an empty string"), (None, "text must be a str, got NoneType"),
                                           (b"hi", "text must be a str, got bytes"),
                                           ("a\ud800b", "text is not valid Unicode text")])
def test_route_text_names_its_argument(fake, text, message):
    with pytest.raises(InvalidInputError, match=message):
        QueryRouter.default().route_text(text)
