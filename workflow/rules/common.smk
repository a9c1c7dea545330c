# Shared helpers: config validation (defaults come from the schema), paths and run lookups.
import hashlib
import json
import os
import re
import shlex
import shutil
from pathlib import Path

import yaml
from snakemake.logging import logger
from snakemake.utils import min_version, validate

from stormfusion.io import atomic_path
from stormfusion.model_names import is_trainable as model_is_trainable
from stormfusion.provenance import (
    VERSION_PROBE,
    checkout_description,
    image_code_warning,
    image_description,
    stable_hash,
)

min_version("9.0")


def _number(value):
    """A number given on the command line as text, as a number; anything else unchanged."""
    for kind in (int, float):
        try:
            return kind(value) if isinstance(value, str) else value
        except ValueError:
            pass
    return value


# `--config training='{nodes: 2, gpus: 4}'` arrives with its values as text (Snakemake reads
# nested values with YAML's BaseLoader): the training settings are numbers.
if isinstance(config.get("training"), dict):
    config["training"] = {k: _number(v) for k, v in config["training"].items()}

validate(config, "../schemas/config.schema.yaml", set_default=True)

RAW = config["paths"]["raw"]
INTERIM = config["paths"]["interim"]
RESULTS = config["paths"]["results"]
MODALITIES = config["selection"]["modalities"]
# runs with `enabled: false` are left out (an overlay drops the seed preset's ablations so)
RUNS = {name: spec for name, spec in config["models"].items() if spec["enabled"]}
CONTAINER = config["container"]
# `--use-conda`: every rule's environment (paths in `conda:` are relative to the rule files).
CONDA_ENV = "../../envs/stormfusion.yaml"


# Names become regular expressions here: escaped, so a `.` in a run name matches only itself.
wildcard_constraints:
    run="|".join(map(re.escape, sorted(RUNS))) or "NO_RUNS",
    modality="|".join(map(re.escape, MODALITIES)),


def rule_resources(rule_name, key, default):
    """A rule's resource from config `resources`, else the given default."""
    return config["resources"].get(rule_name, {}).get(key, default)


def run_model(run):
    """Registry name of a run's model."""
    return RUNS[run]["model"]


def merged_args(run, seen=()):
    """A run's constructor arguments: those of the run it ablates (`ablation_of`, itself
    resolved the same way), updated by its own `args`."""
    spec = config["models"][run]
    args = {}
    base = spec.get("ablation_of")
    if base is not None:
        if base not in config["models"] or base in seen:
            raise ValueError(
                f"config key models.{run}.ablation_of: {base!r} is not another run of "
                f"`models` (or the ablations form a cycle)"
            )
        args.update(merged_args(base, (*seen, run)))
    args.update(spec.get("args") or {})
    return args


def run_args(run):
    """A run's constructor arguments (see merged_args), as a shell-quoted JSON string."""
    return shlex.quote(json.dumps(merged_args(run), sort_keys=True))


def run_training(run):
    """Training settings of a run: the global `training` block updated by the run's own."""
    settings = dict(config["training"])
    settings.update(RUNS[run].get("training") or {})
    return settings


def is_trainable(run):
    """Whether a run's model has weights to train (static metadata: no torch on the host)."""
    return model_is_trainable(run_model(run))


def raw_ready():
    """The file that marks the raw archive as complete for the selected events."""
    if config["source"] == "s3":
        return f"{INTERIM}/download_manifest.json"
    return f"{RAW}/synthetic_manifest.json"


def parent_of(name, kind="input", levels=1):
    """A params function: the folder `levels` up from a job's named input or output file.

    Folders handed to a step as prefixes are derived from the job's files (rather than
    from config strings), so they stay right wherever Snakemake stages the files."""

    def parent(wildcards, input, output):
        files = input if kind == "input" else output
        path = getattr(files, name)
        path = path if isinstance(path, str) else path[0]
        for _ in range(levels):
            path = os.path.dirname(path)
        return path

    return parent


def raw_root(wildcards, input):
    """A params function: the raw archive's folder, beside the twin's manifest; for S3 the
    configured `paths.raw` (the download manifest is kept with the event index)."""
    if config["source"] == "synthetic":
        return os.path.dirname(input.raw)
    return RAW


def zarr_stores():
    return expand(f"{INTERIM}/zarr/{{modality}}.zarr", modality=MODALITIES)


def final_targets():
    """The default target: the paper's tables and figures (the HTML report is
    `snakemake --report`, run by `make demo`)."""
    return [
        f"{RESULTS}/tables/main.csv",
        f"{RESULTS}/tables/ablations.csv",
        f"{RESULTS}/tables/per_lead.csv",
        f"{RESULTS}/figures",
    ]


# Where the bucket's own CATALOG.csv goes: RAW, or beside the plan when RAW/CATALOG.csv is
# the events-only subset's catalog.
SOURCE_CATALOG = (
    f"{INTERIM}/download/CATALOG.csv"
    if config["s3"]["events_only"]
    else f"{RAW}/CATALOG.csv"
)


def download_outputs():
    """Outputs of download_sevir: the manifest, and RAW/CATALOG.csv for an events-only run."""
    outputs = {"manifest": f"{INTERIM}/download_manifest.json"}
    if config["s3"]["events_only"]:
        outputs["catalog"] = f"{RAW}/CATALOG.csv"
    return outputs


def events_only_options(wildcards, input):
    """`--events-only --source-catalog C` for an events-only download, else nothing."""
    if not config["s3"]["events_only"]:
        return ""
    return shlex.join(["--events-only", "--source-catalog", input.catalog])


def s3_options():
    """`stormfusion download` options for the configured bucket."""
    s3 = config["s3"]
    opts = [
        "--bucket",
        s3["bucket"],
        "--region",
        s3["region"],
        "--retries",
        str(s3["retries"]),
    ]
    if s3["endpoint_url"]:
        opts += ["--endpoint-url", s3["endpoint_url"]]
    return shlex.join(opts)


def selection_options():
    """`stormfusion select-events` options from config `selection`."""
    sel = config["selection"]
    opts = [
        "--kind",
        sel["kind"],
        "--seed",
        str(sel["seed"]),
        "--modalities",
        *sel["modalities"],
    ]
    if sel["years"]:
        opts += ["--years", *map(str, sel["years"])]
    if sel["start"]:
        opts += ["--start", sel["start"]]
    if sel["end"]:
        opts += ["--end", sel["end"]]
    if sel["event_types"]:
        opts += ["--event-types", *sel["event_types"]]
    if sel["max_events"]:
        opts += ["--max-events", str(sel["max_events"])]
    if not sel["require_complete"]:
        opts += ["--allow-missing-pixels"]
    return shlex.join(opts)


def split_options():
    """`stormfusion split` options from config `split` (the files it reads: split_sources)."""
    sp = config["split"]
    opts = [
        "--strategy",
        sp["strategy"],
        "--seed",
        str(sp["seed"]),
        "--val-fraction",
        str(sp["val_fraction"]),
        "--test-fraction",
        str(sp["test_fraction"]),
        "--train-end",
        sp["train_end"],
        "--val-end",
        sp["val_end"],
        "--input-frames",
        str(sp["input_frames"]),
        "--output-frames",
        str(sp["output_frames"]),
        "--stride",
        str(sp["stride"]),
    ]
    return shlex.join(opts)


def split_inputs(wildcards):
    """Files the split step reads: the event index, and what the strategy needs (the
    catalog for seed_catalog, the per-split lists for window_list, an earlier manifest).
    """
    sp = config["split"]
    files = {"events": f"{INTERIM}/events.csv"}
    if sp["strategy"] == "seed_catalog":
        # the WHOLE catalog (with s3.events_only, RAW/CATALOG.csv lists only the subset)
        files["catalog"] = (
            SOURCE_CATALOG if config["source"] == "s3" else f"{RAW}/CATALOG.csv"
        )
    elif sp["strategy"] == "window_list":
        for split, path in sp["window_lists"].items():
            if path:
                files[f"list_{split}"] = path
    elif sp["strategy"] == "manifest" and sp["window_manifest"]:
        files["window_manifest"] = sp["window_manifest"]
        files["window_manifest_csv"] = str(
            Path(sp["window_manifest"]).with_suffix(".csv")
        )
    return files


def split_sources(wildcards, input):
    """A params function: the `stormfusion split` options naming split_inputs' files."""
    opts = []
    if "catalog" in input.keys():
        opts += ["--catalog", input.catalog]
    for split in ("train", "val", "test"):
        if f"list_{split}" in input.keys():
            opts += ["--window-list", f"{split}={getattr(input, f'list_{split}')}"]
    if "window_manifest" in input.keys():
        opts += ["--window-manifest", input.window_manifest]
    return shlex.join(opts)


def training_options(run):
    """`stormfusion train` options for a run: its training settings over the global ones,
    and the data-loading settings of `data` and `split.window_sampling` (names and
    defaults: TrainingConfig)."""
    from stormfusion.training.config import config_argv

    sampling = {"window_sampling": config["split"]["window_sampling"]}
    return shlex.join(config_argv({**config["data"], **sampling, **run_training(run)}))


def train_resource(run, key):
    """A training job's SLURM request (executor plugin keys; None: not asked).

    One node: `gpu` GPUs. Several: `nodes` nodes, one task per node (`tasks`), the GPUs
    per node as `gres`, and `mpi` so that the plugin runs the job's command once, in the
    batch step, where its own `srun` starts one torchrun per node; `tasks_per_gpu` 0
    keeps the plugin from deriving --ntasks-per-gpu from `tasks`."""
    t = run_training(run)
    nodes, gpus = t["nodes"], t["gpus"]
    if nodes == 1:
        return gpus if key == "gpu" else None
    request = {
        "nodes": nodes,
        "tasks": nodes,
        "tasks_per_gpu": 0 if gpus else None,
        "gres": f"gpu:{gpus}" if gpus else None,
        "mpi": "srun",
    }
    return request.get(key)


def train_launcher(run):
    """Prefix that starts the training processes: `stormfusion` for one process,
    `torchrun --standalone` for several GPUs of one node, and with `training.nodes` > 1
    `srun` + `torchrun` on every node of the SLURM allocation (docs/cluster.md)."""
    t = run_training(run)
    if t["nodes"] > 1:
        return multinode_launcher(t)
    if t["gpus"] > 1:
        return f"torchrun --standalone --nproc_per_node={t['gpus']} -m stormfusion.cli"
    return "stormfusion"


def _launch_error(text):
    message = shlex.quote(f"stormfusion train: error: {text}")
    return f"{{ echo {message} >&2; exit 2; }}"


def multinode_launcher(t):
    """Shell that checks the allocation and starts one torchrun per node with srun.

    The SLURM plugin's job step hides the allocation's SLURM_* variables except the job
    id, so the node list is asked from SLURM again (squeue) when it is not set."""
    nodes, per_node = t["nodes"], max(t["gpus"], 1)
    port, timeout = t["rdzv_port"], t["rdzv_timeout"]
    setting = f"training.nodes={nodes}"
    no_slurm = _launch_error(
        f"{setting} needs a SLURM allocation of {nodes} nodes: run with --profile "
        "profiles/slurm (this job runs outside SLURM)"
    )
    few = (
        f'{{ echo "stormfusion train: error: {setting} but SLURM job $SLURM_JOB_ID has '
        f'$SLURM_NNODES node(s) ($nodelist)" >&2; exit 2; }}'
    )
    steps = [
        f'[ -n "${{SLURM_JOB_ID:-}}" ] || {no_slurm}',
        'nodelist="${SLURM_JOB_NODELIST:-$(squeue --noheader --jobs "$SLURM_JOB_ID" --format %N)}"',
        'SLURM_NNODES=$(scontrol show hostnames "$nodelist" | wc -l)',
        f'[ "$SLURM_NNODES" -eq {nodes} ] || {few}',
        'head=$(scontrol show hostnames "$nodelist" | sed -n 1p)',
    ]
    srun = (
        "srun --nodes=$SLURM_NNODES --ntasks=$SLURM_NNODES --ntasks-per-node=1"
        " --kill-on-bad-exit=1"
    )
    torchrun = (
        f"torchrun --nnodes $SLURM_NNODES --nproc-per-node {per_node} --rdzv-backend c10d"
        f' --rdzv-endpoint "$head:{port}" --rdzv-id "$SLURM_JOB_ID"'
        f" --rdzv-conf join_timeout={timeout} --max-restarts 0 -m stormfusion.cli"
    )
    return "; ".join(steps) + f"; {srun} {node_container()}{torchrun}"


def train_on_failure(run):
    """After a multi-node launch that failed: one line saying what to check."""
    t = run_training(run)
    if t["nodes"] == 1:
        return ""
    return (
        '|| { rc=$?; echo "stormfusion train: error: training on $SLURM_NNODES nodes failed '
        f"(exit $rc, log above); RendezvousTimeoutError there means the nodes did not meet at "
        f'$head:{t["rdzv_port"]} within training.rdzv_timeout={t["rdzv_timeout"]} s: is '
        'training.rdzv_port open between the nodes?" >&2; exit $rc; }'
    )


def node_container():
    """`apptainer exec ARGS IMAGE ` for a multi-node launch when jobs run in containers
    (`--sdm apptainer`): srun starts the image on every node itself, since srun is not
    in the image. A `docker://` image is the copy Snakemake pulled into
    .snakemake/singularity (the pull happens on the submitting machine)."""
    from snakemake.settings.types import DeploymentMethod

    settings = workflow.deployment_settings
    if DeploymentMethod.APPTAINER not in settings.deployment_method:
        return ""
    image = CONTAINER
    if "://" in image:
        digest = hashlib.md5(image.encode(), usedforsecurity=False).hexdigest()
        cache = settings.apptainer_prefix or Path(".snakemake") / "singularity"
        image = str(Path(cache) / f"{digest}.simg")
    return f"apptainer exec {settings.apptainer_args} {shlex.quote(image)} "


def train_container(wildcards):
    """The image of a training job; none around a multi-node launch (see node_container)."""
    return None if run_training(wildcards.run)["nodes"] > 1 else CONTAINER


def checkpoint_of(run):
    """The trained weights a run's forecasts need (none for untrained baselines)."""
    return [f"{RESULTS}/models/{run}/best.pt"] if is_trainable(run) else []


def checkpoint_option(run):
    ckpt = checkpoint_of(run)
    return shlex.join(["--checkpoint", ckpt[0]]) if ckpt else ""


def lpips_option():
    weights = config["evaluation"]["lpips_weights"]
    return shlex.join(["--lpips-weights", weights]) if weights else ""


def runs_json():
    """The runs (model, args, ablation_of) as a shell-quoted JSON string, for the report."""
    runs = {
        name: {
            "model": spec["model"],
            "args": merged_args(name),
            "ablation_of": spec.get("ablation_of"),
            "trainable": is_trainable(name),
        }
        for name, spec in RUNS.items()
    }
    return shlex.quote(json.dumps(runs, sort_keys=True))


# Provenance: the hash of the whole config (schema defaults filled in) goes to every step
# as `--config-hash` (params `config_hash`, not a rerun trigger), and the config itself is
# kept as RESULTS/configs/<hash>.yaml when a run starts.
CONFIG_HASH = stable_hash(config)


def config_hash(wildcards, input):
    """A params function: the config hash. Taking `input` makes it a derived parameter,
    which Snakemake leaves out of the params rerun trigger: a config change reruns only the
    jobs whose own settings changed."""
    return CONFIG_HASH


def config_snapshot():
    """Write the resolved config to RESULTS/configs/<hash>.yaml (once per distinct config)."""
    path = Path(RESULTS) / "configs" / f"{CONFIG_HASH}.yaml"
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        text = yaml.safe_dump(
            json.loads(json.dumps(config, default=str)), sort_keys=True
        )
        Path(tmp).write_text(f"# config_hash {CONFIG_HASH}\n{text}", encoding="utf-8")


def check_image_code():
    """At onstart under --use-apptainer: warn when the image's stormfusion (version and
    commit) differs from this checkout's, since every job runs the image's code."""
    from snakemake_interface_executor_plugins.settings import DeploymentMethod

    methods = workflow.deployment_settings.deployment_method
    binary = shutil.which("apptainer") or shutil.which("singularity")
    if DeploymentMethod.APPTAINER not in methods or binary is None:
        return
    checkout = checkout_description(workflow.basedir)
    args = shlex.split(workflow.deployment_settings.apptainer_args or "")
    for image in workflow.dag.container_imgs.values():
        probe = [binary, "exec", "--home", os.getcwd(), *args, image.path]
        said = image_description([*probe, "sh", "-c", VERSION_PROBE])
        warning = image_code_warning(image.url, said, checkout)
        if warning:
            logger.warning(f"WARNING: {warning}")
        else:
            logger.info(f"container {image.url}: {said}, as this checkout")
