"""Serve a trained model over HTTP: `bertfit serve MODEL_DIR [--host 127.0.0.1 --port 8000]`.

FastAPI on uvicorn. POST /predict takes `{"text": "..."}` or `{"text": ["...", ...]}` (and
`"text_pair"` for a sentence-pair model) and answers `{"predictions": [{"label": ...,
"probabilities": {label: p}}]}` (`{"score": x}` for regression): the texts are encoded and scored as
`bertfit predict` does (the model's own truncation and input length, its calibrated temperature).
GET /health says whether the model is loaded; GET /metadata the task, labels and how inputs are
read. Requests arriving together are scored together: a batcher collects texts for up to
--max-wait-ms or --batch-size texts, scores them in one pass on a worker thread and answers each
request with its own rows. Memory is bounded by --max-queue texts waiting (then 503) and
--max-texts per request (then 413). Bad requests get a 422 that names the field.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from bertfit import cli

log = logging.getLogger(__name__)


class PredictRequest(BaseModel):
    """POST /predict's body (FastAPI answers 422 naming the field for anything else)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    text: str | list[str] = Field(description="one text, or a list of texts")
    text_pair: str | list[str] | None = Field(None, description="a sentence-pair model's")


@dataclass
class Pending:
    texts: list[str]
    pairs: list[str] | None
    answer: asyncio.Future = field(repr=False)


class Batcher:
    """Collects concurrent requests' texts into batches of up to `batch_size`, waiting at most
    `max_wait_s` after the first for others to join; `score` runs on a worker thread, so the
    event loop keeps accepting requests while a batch is scored."""

    def __init__(self, score: Any, batch_size: int, max_wait_s: float, max_queue: int) -> None:
        self.score = score  # (texts, pairs or None) -> one answer dict per text
        self.batch_size = batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.waiting = 0  # texts queued, not yet scored
        self.queue: asyncio.Queue[Pending] = asyncio.Queue()
        self.batches = 0

    async def submit(self, texts: list[str], pairs: list[str] | None) -> list[dict]:
        from fastapi import HTTPException

        if self.waiting + len(texts) > self.max_queue:
            raise HTTPException(
                503, f"{self.waiting} texts are waiting (--max-queue {self.max_queue}); retry"
            )
        self.waiting += len(texts)
        pending = Pending(texts, pairs, asyncio.get_running_loop().create_future())
        self.queue.put_nowait(pending)
        return await pending.answer

    async def run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            size = len(batch[0].texts)
            deadline = time.monotonic() + self.max_wait_s
            while size < self.batch_size:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    nxt = await asyncio.wait_for(self.queue.get(), left)
                except TimeoutError:
                    break
                batch.append(nxt)
                size += len(nxt.texts)
            await self.answer(batch)

    async def answer(self, batch: list[Pending]) -> None:
        texts = [t for p in batch for t in p.texts]
        paired = batch[0].pairs is not None
        pairs = [t for p in batch for t in (p.pairs or [])] if paired else None
        self.waiting -= len(texts)
        self.batches += 1
        try:
            answers = await asyncio.to_thread(self.score, texts, pairs)
        except Exception as err:  # every request of the batch gets the error
            for p in batch:
                if not p.answer.done():
                    p.answer.set_exception(err)
            return
        start = 0
        for p in batch:
            if not p.answer.done():
                p.answer.set_result(answers[start : start + len(p.texts)])
            start += len(p.texts)


def model_scorer(model_dir: Path, batch_size: int, bf16: bool) -> tuple[Any, dict[str, Any]]:
    """A function that scores texts as `bertfit predict` does, and the model's metadata."""
    import datasets

    from bertfit.models.family import load_trained
    from bertfit.models.onnx import export_info, load_export
    from bertfit.predict import check_model_dir, prediction_columns

    datasets.disable_progress_bars()  # no "tokenising" bar in the server's log per request
    manifest, task = check_model_dir(model_dir)
    trained = load_export(model_dir) if export_info(model_dir) else load_trained(model_dir)
    prep = manifest.preprocessing
    metadata = {
        "model_dir": str(model_dir),
        "task": task.name,
        "problem": task.problem,
        "labels": task.labels,
        "sentence_pair": task.sentence_pair,
        "family": manifest.family,
        "head": manifest.head,
        "method": manifest.method,
        "temperature": manifest.temperature,
        "max_seq_length": prep.max_seq_length if prep else None,
        "truncation": prep.truncation if prep else None,
    }

    def score(texts: list[str], pairs: list[str] | None) -> list[dict]:
        rows = pd.DataFrame({"text": texts} | ({"text_pair": pairs} if pairs else {}))
        columns = prediction_columns(trained, rows, batch_size, bf16, disable_progress=True)
        if task.problem == "regression":
            return [{"score": float(s)} for s in columns["score"]]
        return [
            {
                "label": label,
                "probabilities": {c: float(columns[f"prob_{c}"][i]) for c in task.labels},
            }
            for i, label in enumerate(columns["prediction"])
        ]

    return score, metadata


def make_app(score: Any, metadata: dict[str, Any], args: argparse.Namespace) -> Any:
    """The FastAPI application around a scorer (model_scorer, or a stand-in in tests)."""
    from fastapi import FastAPI, HTTPException

    batcher = Batcher(score, args.batch_size, args.max_wait_ms / 1000, args.max_queue)

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # the batcher runs as long as the server
        worker = asyncio.create_task(batcher.run())
        yield
        worker.cancel()

    app = FastAPI(title=f"bertfit: {metadata['task']}", lifespan=lifespan)
    app.state.batcher = batcher

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "task": metadata["task"], "batches_scored": batcher.batches}

    @app.get("/metadata")
    async def meta() -> dict[str, Any]:
        return metadata | {"max_texts": args.max_texts, "batch_size": args.batch_size}

    @app.post("/predict")
    async def predict(request: PredictRequest) -> dict[str, Any]:
        texts = [request.text] if isinstance(request.text, str) else request.text
        pairs = request.text_pair
        pairs = [pairs] if isinstance(pairs, str) else pairs
        if not texts:
            raise HTTPException(422, "text: an empty list; give at least one text")
        if len(texts) > args.max_texts:
            raise HTTPException(
                413, f"text: {len(texts)} texts, over --max-texts {args.max_texts}; split them"
            )
        empty = [i for i, t in enumerate(texts) if not t.strip()]
        if empty:
            raise HTTPException(422, f"text: blank text at position(s) {empty[:10]}")
        if bool(pairs) != bool(metadata["sentence_pair"]):
            need = "needs text_pair" if metadata["sentence_pair"] else "takes no text_pair"
            raise HTTPException(422, f"text_pair: the model {need}")
        if pairs is not None and len(pairs) != len(texts):
            raise HTTPException(422, f"text_pair: {len(pairs)} pairs for {len(texts)} texts")
        return {"predictions": await batcher.submit(texts, pairs)}

    return app


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", type=Path, help="a model directory finetune wrote")
    parser.add_argument("--host", default="127.0.0.1", help="address (default: 127.0.0.1)")
    parser.add_argument("--port", type=cli.positive_int, default=8000, help="(default: 8000)")
    parser.add_argument(
        "--batch-size", type=cli.positive_int, default=32, help="texts scored at once (32)"
    )
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=10.0,
        help="how long a batch waits for other requests to join it (default: 10 ms)",
    )
    parser.add_argument(
        "--max-texts", type=cli.positive_int, default=256, help="texts per request (256)"
    )
    parser.add_argument(
        "--max-queue",
        type=cli.positive_int,
        default=4096,
        help="texts waiting to be scored before requests get 503 (default: 4096)",
    )
    cli.add_mixed_precision(parser)


def run(args: argparse.Namespace) -> None:
    import uvicorn

    from bertfit.hardware import use_bf16

    cli.configure_logging()
    score, metadata = model_scorer(args.model_dir, args.batch_size, use_bf16(args.mixed_precision))
    log.info(
        "serving %s (%s) on http://%s:%d", args.model_dir, metadata["task"], args.host, args.port
    )
    uvicorn.run(make_app(score, metadata, args), host=args.host, port=args.port, log_level="info")
