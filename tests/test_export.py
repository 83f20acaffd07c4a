"""bertfit export on a tiny BERT: ONNX Runtime scores as PyTorch does, int8 close to it, predict
and serve read the exported directory, other model kinds and bad options are refused."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
from huggingface_hub import ModelCard, ModelCardData

from bertfit import cli
from bertfit.data.tasks import Task, read_task, write_task
from bertfit.evaluation import evaluate
from bertfit.export import QUANTIZATION, export_model
from bertfit.inference import model_scores
from bertfit.models.family import load_trained
from bertfit.models.manifest import MANIFEST_FILE, model_fingerprint
from bertfit.models.onnx import ONNX_FILE, ExportError, export_info, load_export
from bertfit.params import EvaluateParams, FinetuneParams
from bertfit.serve import model_scorer
from bertfit.training.finetune import finetune
from tests.conftest import TINY_FINETUNE

TOY = Task("toy", ["no", "yes"], sentence_pair=False)  # "what" questions are yes
MAX_SEQ_LENGTH = 32  # head_tail truncation (8 + 24 tokens) cuts the long rows


def labelled(rows: list[dict]) -> pd.DataFrame:
    texts = [r["text"] for r in rows]
    labels = ["yes" if t.lower().startswith("what") else "no" for t in texts]
    return pd.DataFrame({"text": texts, "label": labels})


@pytest.fixture(scope="module")
def rows(trec_sample: dict) -> dict[str, pd.DataFrame]:
    test = labelled(trec_sample["test"][:40])
    long = test["text"].head(4).map(lambda t: " ".join([t] * 6))  # over MAX_SEQ_LENGTH
    return {
        "train": labelled(trec_sample["train"][:64]),
        "test": pd.concat([test, test.head(4).assign(text=long)], ignore_index=True),
    }


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, rows: dict) -> Path:
    """finetune's directory: the stock head, head_tail truncation, a fitted temperature."""
    out = tmp_path_factory.mktemp("export")
    params = FinetuneParams(**(TINY_FINETUNE | {"num_train_epochs": 2, "layer_decay": 1.0}))
    finetune(str(tiny_model_dir), TOY, rows["train"], rows["train"], params, MAX_SEQ_LENGTH,
             out / "model", out / "reports")  # fmt: skip
    return out / "model"


@pytest.fixture(scope="module")
def exported(model_dir: Path) -> dict[str, Path]:
    return {
        "fp32": export_model(model_dir),  # the default place: MODEL_DIR-onnx
        "int8": export_model(model_dir, "onnx", "int8", model_dir.parent / "int8"),
    }


def scores(model_dir: Path, texts: pd.DataFrame, export: bool = False) -> np.ndarray:
    trained = load_export(model_dir) if export else load_trained(model_dir)
    dataset = trained.encoder().inputs(texts[["text"]], trained.task)
    return model_scores(trained, dataset, trained.task, 8, False, disable_progress=True)


def test_the_export_directory_holds_graph_tokenizer_and_manifest(
    model_dir: Path, exported: dict[str, Path]
) -> None:
    assert exported["fp32"] == model_dir.with_name("model-onnx")
    for kind, out in exported.items():
        names = {p.name for p in out.iterdir()}
        assert {ONNX_FILE, MANIFEST_FILE, "config.json", "tokenizer_config.json"} <= names
        assert not list(out.rglob("*.safetensors")) and not list(out.rglob("*.bin"))
        info = export_info(out)
        assert info["format"] == "onnx" and info["quantize"] == (None if kind == "fp32" else kind)
        manifest = json.loads((out / MANIFEST_FILE).read_text())
        source = json.loads((model_dir / MANIFEST_FILE).read_text())
        assert {k: v for k, v in manifest.items() if k != "export"} == source
    assert export_info(model_dir) is None
    size = {kind: (out / ONNX_FILE).stat().st_size for kind, out in exported.items()}
    assert size["int8"] < size["fp32"]  # a quarter of the MatMuls' weights; embeddings stay


def test_fp32_onnx_scores_equal_pytorch_and_int8_mostly_agrees(
    model_dir: Path, exported: dict[str, Path], rows: dict
) -> None:
    expected = scores(model_dir, rows["test"])
    fp32 = scores(exported["fp32"], rows["test"], export=True)
    int8 = scores(exported["int8"], rows["test"], export=True)
    assert fp32.shape == int8.shape == expected.shape == (len(rows["test"]), 2)
    np.testing.assert_allclose(fp32, expected, atol=1e-4, rtol=0)
    assert (int8.argmax(-1) == expected.argmax(-1)).mean() >= 0.8
    # quantized: every weight product of the graph is an int8 MatMulNBits, and the scores move
    # (on this tiny model, whose logits stay near zero, by less than 1e-4)
    assert np.isfinite(int8).all() and not np.array_equal(int8, fp32)
    graph = onnx.load(exported["int8"] / ONNX_FILE).graph
    weights = {init.name for init in graph.initializer}
    assert not [n for n in graph.node if n.op_type == "MatMul" and n.input[1] in weights]
    assert any(n.op_type == "MatMulNBits" for n in graph.node)


def test_predict_and_serve_read_the_export_as_the_pytorch_model(
    model_dir: Path, exported: dict[str, Path], rows: dict, tmp_path: Path
) -> None:
    rows["test"].assign(id=range(len(rows["test"]))).to_csv(tmp_path / "in.csv", index=False)
    out = {}
    for name, directory in [("torch", model_dir), *exported.items()]:
        args = ["predict", str(directory), str(tmp_path / "in.csv"), "--batch-size", "8"]
        cli.main([*args, "--output", str(tmp_path / f"{name}.csv"), "--mixed-precision", "no"])
        out[name] = pd.read_csv(tmp_path / f"{name}.csv")
    assert list(out["fp32"].columns) == list(out["torch"].columns) == list(out["int8"].columns)
    assert list(out["torch"].columns)[-3:] == ["prediction", "prob_no", "prob_yes"]
    assert out["fp32"]["prediction"].tolist() == out["torch"]["prediction"].tolist()
    probs = ["prob_no", "prob_yes"]
    np.testing.assert_allclose(out["fp32"][probs], out["torch"][probs], atol=1e-4)

    score, metadata = model_scorer(exported["fp32"], 8, False)
    served = score(rows["test"]["text"].tolist(), None)
    assert metadata["labels"] == TOY.labels and metadata["truncation"] == "head_tail"
    assert [s["label"] for s in served] == out["torch"]["prediction"].tolist()
    np.testing.assert_allclose(
        [s["probabilities"]["yes"] for s in served], out["torch"]["prob_yes"], atol=1e-4
    )


def edited(model_dir: Path, tmp_path: Path, **manifest: object) -> Path:
    """A copy of the directory whose manifest says another kind of model."""
    copy = tmp_path / "_".join(map(str, manifest.values()))
    shutil.copytree(model_dir, copy)
    data = json.loads((copy / MANIFEST_FILE).read_text()) | manifest
    (copy / MANIFEST_FILE).write_text(json.dumps(data))
    return copy


@pytest.mark.parametrize(
    ("manifest", "match"),
    [
        ({"family": "seq2seq", "head": "text2text"}, "a text-to-text model"),
        ({"head": "pooled"}, "a pooled head"),
        ({"method": "lora"}, r"a peft adapter \(method lora\)"),
        ({"method": "prompt_tuning"}, r"a peft adapter \(method prompt_tuning\)"),
    ],
)
def test_other_model_kinds_are_refused_with_the_reason(
    model_dir: Path, tmp_path: Path, manifest: dict, match: str
) -> None:
    with pytest.raises(ExportError, match=match + r".*supports fully fine-tuned encoder"):
        export_model(edited(model_dir, tmp_path, **manifest), out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_exports_and_foreign_directories_are_refused(
    model_dir: Path, exported: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(ExportError, match="an ONNX export already"):
        export_model(exported["fp32"], out_dir=tmp_path / "again")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="taken: exists and is not an export bertfit wrote"):
        export_model(model_dir, out_dir=tmp_path / "taken")
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="not a model directory bertfit wrote"):
        export_model(tmp_path / "taken", out_dir=tmp_path / "out")
    with pytest.raises(ExportError, match="not an ONNX export"):
        load_export(model_dir)


@pytest.mark.parametrize(
    "options",
    [["--format", "tflite"], ["--format", "onnx", "--quantize", "int4"], []],
)
def test_a_bad_format_or_quantization_is_refused_by_argparse(
    options: list[str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["export", str(tmp_path), *options])
    assert exit_.value.code == 2
    assert "--format" in capsys.readouterr().err


EVAL = EvaluateParams(per_device_eval_batch_size=8, prediction="rank", mixed_precision="no")


@pytest.fixture(scope="module")
def evaluated(model_dir: Path, rows: dict) -> Path:
    """evaluate's report folder for the model: metrics.json, and run.json naming the model."""
    task_dir = model_dir.parent / "data" / TOY.name
    write_task(TOY, {"test": rows["test"]}, [], task_dir)
    evaluate(model_dir, read_task(task_dir), EVAL, model_dir.parent / "reports" / "evaluate")
    return model_dir.parent / "reports" / "evaluate"


def card_of(out_dir: Path) -> ModelCard:
    """The export's card, read as the Hub reads it; its front matter survives a round trip."""
    card = ModelCard.load(out_dir / "README.md")
    data = card.data.to_dict()
    assert ModelCardData(**data).to_dict() == data
    return card


def results(card: ModelCard, split: str) -> dict[str, float]:
    found = card.data.eval_results or []
    return {r.metric_name: r.metric_value for r in found if r.dataset_split == split}


def test_evaluate_names_the_model_it_scored(
    model_dir: Path, evaluated: Path, tmp_path: Path
) -> None:
    run = json.loads((evaluated / "run.json").read_text())
    assert run["model"] == {"dir": str(model_dir), "fingerprint": model_fingerprint(model_dir)}
    assert "model" not in json.loads((evaluated / "metrics.json").read_text())
    copy = Path(shutil.copytree(model_dir, tmp_path / "copy"))
    assert model_fingerprint(copy) == model_fingerprint(model_dir)
    (copy / "README.md").write_text((copy / "README.md").read_text() + "\nnotes\n")
    assert model_fingerprint(copy) == model_fingerprint(model_dir)  # the card is not the model
    (copy / "config.json").write_text((copy / "config.json").read_text() + "\n")
    assert model_fingerprint(copy) != model_fingerprint(model_dir)


def test_the_card_lists_test_metrics_of_this_model_beside_validation(
    model_dir: Path, evaluated: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # a base model with a licence (the tiny one has none): the card is not the model's
    # fingerprint, so evaluate's scores are still of this model
    licensed = Path(shutil.copytree(model_dir, tmp_path / "model"))
    source = ModelCard.load(licensed / "README.md")
    source.data.license = "apache-2.0"
    source.save(licensed / "README.md")
    metrics = json.loads((evaluated / "metrics.json").read_text())
    with caplog.at_level(logging.INFO, logger="bertfit.export"):
        out = export_model(licensed, "onnx", "int8", tmp_path / "out", evaluated / "metrics.json")
    assert f"attached from {evaluated / 'metrics.json'}" in caplog.text
    card = card_of(out)
    assert card.data.license == "apache-2.0" and "\nlicense: apache-2.0\n" in card.content
    assert results(card, "validation") == results(source, "validation") != {}
    test = {k.removeprefix("test "): v for k, v in results(card, "test").items()}
    assert test == {k: v for k, v in metrics.items() if k != "ece"} and test
    assert card.data.model_name == source.data.model_name + "-onnx-int8"
    assert {"onnx", "int8"} <= set(card.data.tags)
    assert "## Test results" in card.text and "## Export" in card.text
    assert "the test split's scores are in the evaluate stage's" not in card.text
    assert f"bertfit predict {out}" in card.text
    assert 'pipeline("text-classification"' not in card.text  # it loads no ONNX
    assert export_info(out)["source_fingerprint"] == model_fingerprint(model_dir)
    assert export_info(out)["quantization"] == QUANTIZATION["int8"]


def test_metrics_of_another_model_are_refused(
    model_dir: Path, evaluated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    other = tmp_path / "reports" / "evaluate"
    shutil.copytree(evaluated, other)
    run = json.loads((other / "run.json").read_text())
    (other / "run.json").write_text(json.dumps(run | {"model": {"dir": "x", "fingerprint": "0"}}))
    with pytest.raises(ExportError, match=r"evaluate's scores of x \(fingerprint 0\), not of"):
        export_model(model_dir, out_dir=tmp_path / "out", metrics_file=other / "metrics.json")
    assert not (tmp_path / "out").exists()
    (other / "run.json").write_text(json.dumps({k: v for k, v in run.items() if k != "model"}))
    with pytest.raises(ExportError, match=r"of a model its run\.json does not name"):
        export_model(model_dir, out_dir=tmp_path / "out", metrics_file=other / "metrics.json")
    with pytest.raises(ExportError, match="not found"):
        export_model(model_dir, out_dir=tmp_path / "out", metrics_file=tmp_path / "no.json")

    # by default, the project's reports/evaluate/metrics.json, attached only when it matches
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.INFO, logger="bertfit.export"):
        out = export_model(model_dir, out_dir=tmp_path / "out")
    assert "no test metrics, none attached" in caplog.text and "does not name" in caplog.text
    card = card_of(out)
    assert results(card, "test") == {} and results(card, "validation")
    assert "## Test results" not in card.text and "Test results: none attached" in card.text
    shutil.rmtree(other)
    shutil.copytree(evaluated, other)
    cli.main(["export", str(model_dir), "--format", "onnx", "--out", str(tmp_path / "out")])
    assert results(card_of(out), "test")
