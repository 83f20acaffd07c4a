"""models.methods: the tuning-method registry agrees with the params schema, and a directory
naming an unknown method is a readable error."""

from pathlib import Path
from typing import get_args

import pytest

from bertfit.models.family import load_trained
from bertfit.models.manifest import Manifest
from bertfit.models.methods import METHODS
from bertfit.params import FinetuneParams, MultitaskParams


def test_every_method_the_params_accept_is_registered() -> None:
    finetune = get_args(FinetuneParams.model_fields["method"].annotation)
    multitask = get_args(MultitaskParams.model_fields["method"].annotation)
    assert set(finetune) == set(METHODS)
    assert set(multitask) <= set(METHODS)
    assert all(METHODS[name].name == name for name in METHODS)


def test_a_directory_of_an_unknown_method_is_a_readable_error(tmp_path: Path) -> None:
    Manifest("encoder", "stock", "finetune", method="adapterx").save(tmp_path)
    with pytest.raises(ValueError, match=r"tuning method 'adapterx' is not known; known: \["):
        load_trained(tmp_path)
