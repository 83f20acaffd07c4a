"""Run a stage script and kill it with SIGKILL at a chosen point: the fault-injection tests'
driver (`python tests/faults.py <when>:<step> stages/<stage>.py <args>`).

<when> is `after_save` (just after the checkpoint of <step> is complete), `while_saving`
(the checkpoint of <step> is written but for its trainer_state.json, which the Trainer writes
last) or `at_step` (at the end of optimisation step <step>, before that step's evaluation and
checkpoint); or
`call:<module>.<function>:<n>` (as the n-th call of that module-level function starts, e.g.
`call:bertfit.evaluation.write_json:2`, between evaluate's report files). SIGKILL runs no
cleanup, as `kill -9` or the OOM killer would.
"""

from __future__ import annotations

import importlib
import os
import runpy
import signal
import sys
from pathlib import Path

from transformers import Trainer, TrainerCallback, TrainerState


def die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def arm(when: str, step: int) -> None:
    if when == "after_save":
        save = Trainer._save_checkpoint

        def save_then_die(self: Trainer, *args: object, **kwargs: object) -> None:
            save(self, *args, **kwargs)
            if self.state.global_step == step:
                die()

        Trainer._save_checkpoint = save_then_die
    elif when == "while_saving":
        write_state = TrainerState.save_to_json

        def die_before_state(self: TrainerState, path: str) -> None:
            if Path(path).parent.name == f"checkpoint-{step}":
                die()
            write_state(self, path)

        TrainerState.save_to_json = die_before_state
    elif when == "at_step":

        class DieAtStep(TrainerCallback):
            def on_step_end(self, args: object, state: TrainerState, *_: object, **__: object):
                if state.global_step == step:
                    die()

        init = Trainer.__init__

        def init_with_kill(self: Trainer, *args: object, **kwargs: object) -> None:
            init(self, *args, **kwargs)
            self.add_callback(DieAtStep())

        Trainer.__init__ = init_with_kill
    elif when.startswith("call:"):
        module_name, _, function = when.removeprefix("call:").rpartition(".")
        module = importlib.import_module(module_name)
        original, calls = getattr(module, function), []

        def die_at_call(*args: object, **kwargs: object) -> object:
            calls.append(1)
            if len(calls) == step:
                die()
            return original(*args, **kwargs)

        setattr(module, function, die_at_call)
    else:
        raise SystemExit(f"unknown fault {when!r}")


if __name__ == "__main__":
    fault, script, *argv = sys.argv[1:]
    when, _, at = fault.rpartition(":")
    arm(when, int(at))
    sys.argv = [script, *argv]
    sys.path.insert(0, os.getcwd())
    runpy.run_path(script, run_name="__main__")
