"""The workflow's static model table (stormfusion.model_names, importable without torch)
agrees with the model registry, and naming an unknown model is a clear error."""

from __future__ import annotations

import pytest

from stormfusion.errors import StormFusionError
from stormfusion.model_names import TRAINABLE, is_trainable
from stormfusion.models import get_model_class, list_models


def test_trainable_table_equals_the_registry() -> None:
    assert {n: get_model_class(n).trainable for n in list_models()} == TRAINABLE


def test_unknown_model_names_the_valid_ones() -> None:
    with pytest.raises(StormFusionError, match=r"unknown model 'sgt2'; valid names: convlstm, "):
        is_trainable("sgt2")
