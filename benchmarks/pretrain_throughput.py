"""Pretrain training-step throughput: bertfit versus the plain Hugging Face recipe, in one run.

Baseline (as run_mlm does by default): AutoModelForMaskedLM + DataCollatorForLanguageModeling +
Trainer with its default arguments: full-vocabulary logits, fp32, packed blocks (run_mlm packs by
default, so there is no padding a tuned run could drop: in fp32 the tuned Hugging Face run is this
one). hf_tuned_bf16, where the CPU or GPU has bf16 arithmetic: the same with bf16 autocast, the
precision bertfit runs there. bertfit: the pretrain stage's own path (training.pretrain): the
MaskedLM objective's model, collator and logits and loss at the masked positions only (the encoder's
last layer too: models.last_layer), the stage's `pretrain_arguments` (training.trainer's
`training_arguments`) and `stage_trainer` (BertfitTrainer); in fp32 (pretrain.mixed_precision: no)
and, where the CPU or GPU has bf16 arithmetic, under bf16 autocast (auto: bertfit's default there).
Only what a benchmark must differs from the stage: a fixed number of steps, no checkpoints, no
logging.

Both train on the same blocks (the target's within-task corpus, tokenised and packed as the stage
does it, once, by the parent process) with the same batch. The variants alternate in rounds so
machine noise hits them alike; a step's time is its own (forward, backward, optimiser; the
masking and loading of its batch are left out), and tokens/s counts every token of the packed
blocks.

    python benchmarks/pretrain_throughput.py --steps 30 --rounds 2

`<hf variant>_malloc`: the same Hugging Face run in a process with bertfit's malloc settings
(hardware.keep_freed_memory, which bertfit's stages apply): the share of bertfit's lead a
Hugging Face user gets by setting glibc's MALLOC_MMAP_MAX_=0 and MALLOC_TRIM_THRESHOLD_ too.
Each run is a Python process of its own (timing.alternate).

`speedup` is over the baseline, `speedup_vs_tuned` over the Hugging Face run in the same
precision (the baseline for fp32, hf_tuned_bf16 for bf16), `speedup_vs_tuned_malloc` over that
run with bertfit's malloc settings.

Prints a table and writes it as JSON to --out (default reports/benchmarks/pretrain.json).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import timing
import torch
from datasets import Dataset
from transformers import (
    AutoConfig,
    AutoModelForMaskedLM,
    DataCollatorForLanguageModeling,
    PreTrainedTokenizerBase,
    Trainer,
    set_seed,
)

from bertfit.data.corpus import build_corpus
from bertfit.models.loading import LOAD_KWARGS, load_tokenizer, resolve_model_name
from bertfit.params import PretrainParams, load
from bertfit.reporting import write_json
from bertfit.training.objectives.mlm import MaskedLM
from bertfit.training.pretrain import pretrain_arguments
from bertfit.training.trainer import BertfitTrainer, stage_trainer

BLOCKS_DIR = "blocks"  # in the scratch folder: the tokenised blocks every variant's process reads


@dataclasses.dataclass
class Training:
    """What every variant shares: the model, the tokenised blocks, the stage's params."""

    model_name: str
    params: PretrainParams
    dataset: Dataset
    tokenizer: PreTrainedTokenizerBase

    def baseline_trainer(self, max_steps: int, output_dir: Path, bf16: bool = False) -> Trainer:
        """run_mlm with its defaults, at the pretrain stage's learning rate and batch (and, for
        the tuned bf16 run, bf16 autocast)."""
        model = AutoModelForMaskedLM.from_pretrained(
            resolve_model_name(self.model_name), **LOAD_KWARGS
        )
        collator = DataCollatorForLanguageModeling(
            self.tokenizer, mlm_probability=self.params.mlm_probability
        )
        return Trainer(
            model=model,
            args=dataclasses.replace(
                timing.baseline_arguments(self.params, max_steps, output_dir),
                bf16=bf16,
                use_cpu=not torch.cuda.is_available(),  # bf16 autocast on a CPU must be asked for
            ),
            train_dataset=self.dataset,
            data_collator=collator,
            processing_class=self.tokenizer,
        )

    def bertfit_trainer(self, max_steps: int, output_dir: Path, bf16: bool) -> BertfitTrainer:
        """The trainer training.pretrain.pretrain builds, in fp32 or under bf16 autocast."""
        # the stage's own params and arguments, but for the precision, bounded to the timed steps,
        # without its checkpoints and the logging
        params = self.params.model_copy(
            update={"mixed_precision": "auto" if bf16 else "no", "max_steps": max_steps}
        )
        objective = MaskedLM(params, self.model_name)
        model = objective.load_model()
        objective.for_training(model)
        args = dataclasses.replace(
            pretrain_arguments(params, output_dir, objective),
            save_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
        )
        collator = objective.collator(self.tokenizer)
        return stage_trainer(params, args, model, self.dataset, collator, self.tokenizer)

    def seconds_per_step(self, variant: str, steps: int, warmup: int, scratch: Path) -> float:
        """Median seconds of one variant's training steps after `warmup` untimed ones."""
        set_seed(0)
        bf16 = variant.endswith("bf16")
        if variant.startswith("hf_"):
            trainer = self.baseline_trainer(steps + warmup, scratch / variant, bf16)
        else:
            trainer = self.bertfit_trainer(steps + warmup, scratch / variant, bf16)
        return timing.time_training(trainer, warmup).median_step()


def benchmark_training(params_file: Path, dataset_dir: Path | None = None) -> Training:
    """The variants' shared model, params and blocks: the target's within-task corpus
    tokenised and packed as the stage does it, or, from `dataset_dir`, those blocks as a
    parent process saved them (Dataset.save_to_disk) so each variant's process need not
    tokenise again."""
    model, params, collect = load(params_file, "model", "pretrain", "collect")
    tokenizer = load_tokenizer(model.name)
    if dataset_dir is not None:
        return Training(model.name, params, Dataset.load_from_disk(str(dataset_dir)), tokenizer)
    target = timing.prepared_target(params_file)
    corpus, _, _ = build_corpus(
        [target.name], {target.name: target}, collect.corpus_heldout_ratio, collect.seed
    )
    texts = corpus["text"].tolist()
    dataset = MaskedLM(params, model.name).tokenize(texts, tokenizer, "benchmark corpus")
    return Training(model.name, params, dataset, tokenizer)


def main(argv: list[str] | None = None) -> None:
    args = timing.parse_args(__doc__, argv, steps=30, report="pretrain.json")
    model, params = load(args.params, "model", "pretrain")
    batch = params.per_device_train_batch_size * params.gradient_accumulation_steps
    block = params.max_seq_length

    def measure(variant: str) -> float:
        variant = timing.process_settings(variant)
        training = benchmark_training(args.params, args.scratch / BLOCKS_DIR)
        return training.seconds_per_step(variant, args.steps, args.warmup, args.scratch)

    if timing.measured(args, measure):
        return
    bf16 = ["hf_tuned_bf16", f"hf_tuned_bf16{timing.MALLOC}", "bertfit_bf16"]
    variants = ["hf_baseline", f"hf_baseline{timing.MALLOC}", "bertfit_fp32"]
    variants += bf16 if timing.with_bf16(args) else []
    with tempfile.TemporaryDirectory() as work:  # the blocks and the Trainers' output_dir
        benchmark_training(args.params).dataset.save_to_disk(str(Path(work) / BLOCKS_DIR))
        seconds = timing.alternate(args.rounds, variants, __file__, args, Path(work))

    print(
        f"{timing.device_name()}; {model.name}; batch {batch} x {block} tokens; "
        f"{args.steps} timed steps x {args.rounds} rounds"
    )
    rows = timing.speed_table(
        "variant", seconds, "hf_baseline", batch * block, "seconds_per_step", "tokens_per_s"
    )
    config = AutoConfig.from_pretrained(resolve_model_name(model.name))
    flops_per_token = timing.encoder_flops_per_token(config, block)
    timing.add_utilisation(rows, "tokens_per_s", 1, flops_per_token)
    timing.versus_tuned(rows, "bertfit_fp32", "hf_baseline", "seconds_per_step")
    if timing.with_bf16(args):
        timing.versus_tuned(rows, "bertfit_bf16", "hf_tuned_bf16", "seconds_per_step")
    result = {
        "machine": timing.machine(),
        "model": model.name,
        "batch": batch,
        "block": block,
        "timed_steps": args.steps,
        "rounds": args.rounds,
        "model_flops_per_token": flops_per_token,
        "peak_bf16_flops": timing.peak_bf16_flops(),
        "variants": rows,
    }
    write_json(args.out, result)


if __name__ == "__main__":
    main()
