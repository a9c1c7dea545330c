# Scores of every run, then the paper's tables, figures and the Snakemake report.


rule score_model:
    input:
        forecast=f"{RESULTS}/forecasts/{{run}}.zarr",
        vil=f"{INTERIM}/zarr/vil.zarr",
        windows=f"{INTERIM}/windows.csv",
    output:
        csv=f"{RESULTS}/scores/{{run}}.csv",
        summary=f"{RESULTS}/scores/{{run}}.json",
        counts=f"{RESULTS}/scores/{{run}}.counts.npz",
    log:
        f"{RESULTS}/logs/score_model/{{run}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/score_model/{{run}}.tsv"
    conda:
        CONDA_ENV
    threads: rule_resources("score_model", "threads", 2)
    resources:
        mem_mb=rule_resources("score_model", "mem_mb", 4000),
        runtime=rule_resources("score_model", "runtime", 30),
    params:
        config_hash=config_hash,
        lpips=lpips_option(),
        # the split step's manifest (its digest is declared in the scores; "unknown" if absent)
        manifest=f"{INTERIM}/windows_manifest.json",
        size=config["data"]["image_size"],
    shell:
        "stormfusion score --forecast {input.forecast:q} --truth {input.vil:q}"
        " --windows {input.windows:q} --windows-manifest {params.manifest:q} {params.lpips}"
        " --out-csv {output.csv:q} --out-json {output.summary:q}"
        " --out-counts {output.counts:q} --image-size {params.size:q}"
        " --config-hash {params.config_hash:q} > {log:q} 2>&1"


rule make_report:
    input:
        scores=expand(f"{RESULTS}/scores/{{run}}.counts.npz", run=RUNS),
        summaries=expand(f"{RESULTS}/scores/{{run}}.json", run=RUNS),
        forecasts=expand(f"{RESULTS}/forecasts/{{run}}.zarr", run=RUNS),
        metrics=lambda wc: [
            f"{RESULTS}/models/{run}/metrics.csv" for run in RUNS if is_trainable(run)
        ],
        vil=f"{INTERIM}/zarr/vil.zarr",
        windows=f"{INTERIM}/windows.csv",
        meta=f"{INTERIM}/events.json",
    output:
        main=report(
            f"{RESULTS}/tables/main.csv",
            caption="../report/tables.rst",
            category="Tables",
        ),
        ablations=report(
            f"{RESULTS}/tables/ablations.csv",
            caption="../report/tables.rst",
            category="Tables",
        ),
        per_lead=report(
            f"{RESULTS}/tables/per_lead.csv",
            caption="../report/tables.rst",
            category="Tables",
        ),
        figures=report(
            directory(f"{RESULTS}/figures"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
        ),
    log:
        f"{RESULTS}/logs/make_report.log",
    benchmark:
        f"{RESULTS}/benchmarks/make_report.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=rule_resources("make_report", "mem_mb", 4000),
        runtime=rule_resources("make_report", "runtime", 30),
    params:
        config_hash=config_hash,
        runs=runs_json(),
        results=parent_of("main", "output", levels=2),
        zarr=parent_of("vil"),
        panels=config["report"]["panel_events"],
        bootstrap=config["evaluation"]["bootstrap"],
        seed=config["evaluation"]["seed"],
    shell:
        "stormfusion report --runs {params.runs} --results {params.results:q}"
        " --zarr-dir {params.zarr:q} --windows {input.windows:q} --events-meta {input.meta:q}"
        " --config-hash {params.config_hash:q} --panel-events {params.panels:q}"
        " --bootstrap {params.bootstrap:q} --seed {params.seed:q} > {log:q} 2>&1"
