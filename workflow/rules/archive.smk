# The Zarr archive (one store per modality) and the train/val/test windows.


rule convert_to_zarr:
    input:
        events=f"{INTERIM}/events.csv",
        meta=f"{INTERIM}/events.json",
        raw=raw_ready(),
    output:
        store=directory(f"{INTERIM}/zarr/{{modality}}.zarr"),
    log:
        f"{RESULTS}/logs/convert_to_zarr/{{modality}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/convert_to_zarr/{{modality}}.tsv"
    conda:
        CONDA_ENV
    threads: rule_resources("convert_to_zarr", "threads", 2)
    resources:
        mem_mb=rule_resources("convert_to_zarr", "mem_mb", 4000),
        runtime=rule_resources("convert_to_zarr", "runtime", 60),
    params:
        config_hash=config_hash,
        root=raw_root,
        verify=config["convert"]["verify_events"],
    shell:
        "stormfusion convert --events {input.events:q} --data-root {params.root:q}"
        " --modality {wildcards.modality:q} --out {output.store:q}"
        " --verify-events {params.verify:q} --workers {threads}"
        " --config-hash {params.config_hash:q} > {log:q} 2>&1"


rule split_events:
    input:
        unpack(split_inputs),
    output:
        windows=f"{INTERIM}/windows.csv",
        manifest_csv=f"{INTERIM}/windows_manifest.csv",
        manifest=f"{INTERIM}/windows_manifest.json",
    log:
        f"{RESULTS}/logs/split_events.log",
    benchmark:
        f"{RESULTS}/benchmarks/split_events.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=rule_resources("split_events", "mem_mb", 1000),
        runtime=rule_resources("split_events", "runtime", 10),
    params:
        config_hash=config_hash,
        options=split_options(),
        sources=split_sources,
    shell:
        "stormfusion split --events {input.events:q} {params.options} {params.sources}"
        " --out {output.windows:q} --manifest {output.manifest:q}"
        " --config-hash {params.config_hash:q} > {log:q} 2>&1"
