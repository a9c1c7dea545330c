# Training of every learned run and forecasts of every run over the evaluation split.


rule train_model:
    input:
        stores=zarr_stores(),
        windows=f"{INTERIM}/windows.csv",
        meta=f"{INTERIM}/events.json",
    output:
        best=f"{RESULTS}/models/{{run}}/best.pt",
        metrics=f"{RESULTS}/models/{{run}}/metrics.csv",
    log:
        f"{RESULTS}/logs/train_model/{{run}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_model/{{run}}.tsv"
    conda:
        CONDA_ENV
    container:
        train_container
    threads: rule_resources("train_model", "threads", 2)
    resources:
        mem_mb=rule_resources("train_model", "mem_mb", 8000),
        runtime=rule_resources("train_model", "runtime", 120),
        gpu=lambda wc: train_resource(wc.run, "gpu"),
        nodes=lambda wc: train_resource(wc.run, "nodes"),
        tasks=lambda wc: train_resource(wc.run, "tasks"),
        tasks_per_gpu=lambda wc: train_resource(wc.run, "tasks_per_gpu"),
        gres=lambda wc: train_resource(wc.run, "gres"),
        mpi=lambda wc: train_resource(wc.run, "mpi"),
    params:
        config_hash=config_hash,
        launcher=lambda wc: train_launcher(wc.run),
        on_failure=lambda wc: train_on_failure(wc.run),
        model=lambda wc: run_model(wc.run),
        args=lambda wc: run_args(wc.run),
        options=lambda wc: training_options(wc.run),
        zarr=parent_of("stores"),
        out=parent_of("best", "output"),
    shell:
        "{params.launcher} train --model {params.model:q} --model-args {params.args}"
        " --zarr-dir {params.zarr:q} --windows {input.windows:q} --events-meta {input.meta:q}"
        " --out-dir {params.out:q} {params.options} --resume auto"
        " --config-hash {params.config_hash:q} > {log:q} 2>&1 {params.on_failure}"


rule predict_model:
    input:
        stores=zarr_stores(),
        windows=f"{INTERIM}/windows.csv",
        meta=f"{INTERIM}/events.json",
        checkpoint=lambda wc: checkpoint_of(wc.run),
    output:
        forecast=directory(f"{RESULTS}/forecasts/{{run}}.zarr"),
    log:
        f"{RESULTS}/logs/predict_model/{{run}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/predict_model/{{run}}.tsv"
    conda:
        CONDA_ENV
    threads: rule_resources("predict_model", "threads", 2)
    resources:
        mem_mb=rule_resources("predict_model", "mem_mb", 8000),
        runtime=rule_resources("predict_model", "runtime", 60),
        gpu=lambda wc: (
            rule_resources("predict_model", "gpu", 1) if is_trainable(wc.run) else 0
        ),
    params:
        config_hash=config_hash,
        model=lambda wc: run_model(wc.run),
        args=lambda wc: run_args(wc.run),
        checkpoint=lambda wc: checkpoint_option(wc.run),
        zarr=parent_of("stores"),
        split=config["evaluation"]["split"],
        size=config["data"]["image_size"],
        lightning=config["data"]["lightning_frames"],
        batch=config["evaluation"]["batch_size"],
    shell:
        "stormfusion predict --run {wildcards.run:q} --model {params.model:q}"
        " --model-args {params.args} {params.checkpoint} --zarr-dir {params.zarr:q}"
        " --windows {input.windows:q} --events-meta {input.meta:q} --split {params.split:q}"
        " --image-size {params.size:q} --lightning-frames {params.lightning:q}"
        " --batch-size {params.batch:q} --workers {threads}"
        " --out {output.forecast:q} --config-hash {params.config_hash:q} > {log:q} 2>&1"
