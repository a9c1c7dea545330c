# Raw SEVIR: the bucket (source: s3) or the synthetic twin (source: synthetic), then the
# event index. Downstream rules see the same files either way.

if config["source"] == "synthetic":

    rule synthesize_sevir:
        output:
            catalog=f"{RAW}/CATALOG.csv",
            manifest=f"{RAW}/synthetic_manifest.json",
        log:
            f"{RESULTS}/logs/synthesize_sevir.log",
        benchmark:
            f"{RESULTS}/benchmarks/synthesize_sevir.tsv"
        conda:
            CONDA_ENV
        threads: 1
        resources:
            mem_mb=rule_resources("synthesize_sevir", "mem_mb", 2000),
            runtime=rule_resources("synthesize_sevir", "runtime", 30),
        params:
            config_hash=config_hash,
            out=parent_of("catalog", "output"),
            events=config["synthetic"]["events"],
            random_events=config["synthetic"]["random_events"],
            size=config["synthetic"]["image_size"],
            year=config["synthetic"]["year"],
            seed=config["synthetic"]["seed"],
        shell:
            "stormfusion synthesize --out {params.out:q} --events {params.events:q}"
            " --random-events {params.random_events:q} --image-size {params.size:q}"
            " --year {params.year:q} --seed {params.seed:q}"
            " --config-hash {params.config_hash:q} > {log:q} 2>&1"

else:
    # Whole files: the catalog goes to RAW. Events only (`s3.events_only`): the bucket's
    # catalog goes to INTERIM/download and the download writes RAW/CATALOG.csv for the
    # subset files it makes. Either way the files are planned by a selection on the bucket's
    # catalog and select_events runs again on RAW/CATALOG.csv once they are on disk, so the
    # data fingerprint covers them.

    rule download_catalog:
        output:
            catalog=SOURCE_CATALOG,
        log:
            f"{RESULTS}/logs/download_catalog.log",
        benchmark:
            f"{RESULTS}/benchmarks/download_catalog.tsv"
        conda:
            CONDA_ENV
        threads: 1
        resources:
            mem_mb=rule_resources("download_catalog", "mem_mb", 1000),
            runtime=rule_resources("download_catalog", "runtime", 30),
        params:
            config_hash=config_hash,
            s3=s3_options(),
            out=parent_of("catalog", "output"),
        shell:
            "stormfusion download {params.s3} --out {params.out:q} --catalog-only"
            " --config-hash {params.config_hash:q} > {log:q} 2>&1"

    rule plan_download:
        input:
            catalog=SOURCE_CATALOG,
        output:
            events=f"{INTERIM}/download/events.csv",
            meta=f"{INTERIM}/download/events.json",
        log:
            f"{RESULTS}/logs/plan_download.log",
        benchmark:
            f"{RESULTS}/benchmarks/plan_download.tsv"
        conda:
            CONDA_ENV
        threads: 1
        resources:
            mem_mb=rule_resources("select_events", "mem_mb", 2000),
            runtime=rule_resources("select_events", "runtime", 10),
        params:
            config_hash=config_hash,
            root=parent_of("catalog"),
            filters=selection_options(),
        shell:
            "stormfusion select-events --catalog {input.catalog:q} --data-root {params.root:q}"
            " {params.filters} --out {output.events:q} --meta {output.meta:q}"
            " --config-hash {params.config_hash:q} > {log:q} 2>&1"

    rule download_sevir:
        input:
            events=f"{INTERIM}/download/events.csv",
            catalog=SOURCE_CATALOG,
        output:
            **download_outputs(),
        log:
            f"{RESULTS}/logs/download_sevir.log",
        benchmark:
            f"{RESULTS}/benchmarks/download_sevir.tsv"
        conda:
            CONDA_ENV
        threads: rule_resources("download_sevir", "threads", 8)
        resources:
            mem_mb=rule_resources("download_sevir", "mem_mb", 4000),
            runtime=rule_resources("download_sevir", "runtime", 720),
        params:
            config_hash=config_hash,
            s3=s3_options(),
            out=RAW,
            concurrency=config["s3"]["concurrency"],
            events_only=events_only_options,
        shell:
            "stormfusion download {params.s3} --out {params.out:q} --events {input.events:q}"
            " --concurrency {params.concurrency:q} --manifest {output.manifest:q}"
            " {params.events_only} --config-hash {params.config_hash:q} > {log:q} 2>&1"


rule select_events:
    input:
        catalog=f"{RAW}/CATALOG.csv",
        raw=raw_ready(),
    output:
        events=f"{INTERIM}/events.csv",
        meta=f"{INTERIM}/events.json",
    log:
        f"{RESULTS}/logs/select_events.log",
    benchmark:
        f"{RESULTS}/benchmarks/select_events.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=rule_resources("select_events", "mem_mb", 2000),
        runtime=rule_resources("select_events", "runtime", 10),
    params:
        config_hash=config_hash,
        root=parent_of("catalog"),
        filters=selection_options(),
    shell:
        "stormfusion select-events --catalog {input.catalog:q} --data-root {params.root:q}"
        " {params.filters} --out {output.events:q} --meta {output.meta:q}"
        " --config-hash {params.config_hash:q} > {log:q} 2>&1"
