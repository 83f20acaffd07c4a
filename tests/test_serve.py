"""bertfit serve: a real server process on loopback, asked with a real HTTP client (urllib)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bertfit.data.tasks import Task
from bertfit.models.family import load_trained
from bertfit.params import FinetuneParams
from bertfit.predict import predict_frame
from bertfit.training.finetune import finetune
from tests.conftest import TINY_FINETUNE

BERTFIT = Path(sys.executable).parent / "bertfit"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url: str, body: object | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture(scope="module")
def questions(trec_sample: dict) -> pd.DataFrame:
    return pd.DataFrame(trec_sample["train"][:64])[["text", "label"]]


@pytest.fixture(scope="module")
def model_dir(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, questions: pd.DataFrame
) -> Path:
    out = tmp_path_factory.mktemp("serve")
    task = Task("trec", sorted(set(questions["label"])))
    params = FinetuneParams(**(TINY_FINETUNE | {"num_train_epochs": 1, "mixed_precision": "no"}))
    finetune(str(tiny_model_dir), task, questions, questions, params, 32, out / "model",
             out / "reports")  # fmt: skip
    return out / "model"


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[str]:
    with serving(model_dir) as url:
        yield url


@contextmanager
def serving(model_dir: Path) -> Iterator[str]:
    """`bertfit serve model_dir` in a process of its own, on a free port; its URL once healthy."""
    port = free_port()
    command = [str(BERTFIT), "serve", str(model_dir), "--port", str(port), "--max-texts", "8",
               "--max-wait-ms", "50", "--mixed-precision", "no"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if call(f"{url}/health")[0] == 200:
                break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"the server did not start:\n{process.stdout.read()[-3000:]}")
        time.sleep(0.5)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_it_answers_as_predict_does(server: str, model_dir: Path, questions: pd.DataFrame) -> None:
    status, meta = call(f"{server}/metadata")
    assert status == 200 and meta["task"] == "trec" and meta["problem"] == "classification"
    assert meta["labels"] == sorted(set(questions["label"])) and meta["max_texts"] == 8
    texts = questions["text"][:5].tolist()
    status, one = call(f"{server}/predict", {"text": texts[0]})
    assert status == 200 and len(one["predictions"]) == 1, one
    status, many = call(f"{server}/predict", {"text": texts})
    assert status == 200 and many["predictions"][0]["label"] == one["predictions"][0]["label"]
    first = [p["probabilities"] for p in (one["predictions"][0], many["predictions"][0])]
    np.testing.assert_allclose(list(first[0].values()), list(first[1].values()), atol=1e-6)
    expected = predict_frame(load_trained(model_dir), pd.DataFrame({"text": texts}), batch_size=8)
    for got, (_, row) in zip(many["predictions"], expected.iterrows(), strict=True):
        assert got["label"] == row["prediction"]
        probs = [got["probabilities"][label] for label in meta["labels"]]
        np.testing.assert_allclose(probs, [row[f"prob_{x}"] for x in meta["labels"]], atol=1e-5)


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({}, 422, "text"),
        ({"text": 3}, 422, "text"),
        ({"text": []}, 422, "an empty list"),
        ({"text": ["a question ?", "  "]}, 422, "blank text at position(s) [1]"),
        ({"text": ["q ?"] * 9}, 413, "9 texts, over --max-texts 8"),
        ({"text": "q ?", "texts": "typo"}, 422, "texts"),
        ({"text": "q ?", "text_pair": "x"}, 422, "the model takes no text_pair"),
    ],
)
def test_bad_requests_get_a_4xx_that_names_the_field(
    server: str, body: dict, status: int, says: str
) -> None:
    got, answer = call(f"{server}/predict", body)
    assert got == status
    assert says in json.dumps(answer)


def test_concurrent_requests_are_batched_and_each_gets_its_own_rows(
    server: str, questions: pd.DataFrame
) -> None:
    before = call(f"{server}/health")[1]["batches_scored"]
    texts = questions["text"][:16].tolist()
    alone = [call(f"{server}/predict", {"text": t})[1]["predictions"][0] for t in texts]
    after_alone = call(f"{server}/health")[1]["batches_scored"]
    assert after_alone - before == 16  # one by one: a batch each
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(lambda t: call(f"{server}/predict", {"text": t}), texts))
    assert [status for status, _ in together] == [200] * 16
    assert [answer["predictions"][0]["label"] for _, answer in together] == [
        a["label"] for a in alone
    ]
    batches = call(f"{server}/health")[1]["batches_scored"] - after_alone
    assert batches < 16  # requests that arrived together were scored together
