"""Static facts about the registered models that the workflow needs before any job runs.

Planning the DAG (``snakemake -n``, or a ``--use-singularity`` run whose steps all execute
in the image) happens on the host, which may have Snakemake and this package's light
dependencies only. Whether a run has weights to train decides which jobs exist, so it is
kept here, importable without torch, rather than read from the model classes (which live in
:mod:`stormfusion.models`, whose import pulls torch).

``tests/test_model_names.py`` checks that this table equals what the model registry
declares: a model registered without an entry here fails that test.
"""

from __future__ import annotations

from stormfusion.errors import StormFusionError

#: registry name -> whether the model has weights to train (``ForecastModel.trainable``).
TRAINABLE: dict[str, bool] = {
    "convlstm": True,
    "optical_flow": False,
    "persistence": False,
    "sgt": True,
    "sgt_advect": True,
    "unet2d": True,
    "unet2d_stage4": True,
}


def is_trainable(name: str) -> bool:
    """Whether the model registered as ``name`` trains; unknown names list the valid ones."""
    try:
        return TRAINABLE[name]
    except KeyError:
        valid = ", ".join(sorted(TRAINABLE))
        raise StormFusionError(f"unknown model {name!r}; valid names: {valid}") from None
