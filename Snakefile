# StormFusion-SEVIR: SEVIR download -> Zarr -> splits -> training -> forecasts -> scores -> report.
#
#   snakemake --cores 8 --use-singularity                  # the study (config.yaml)
#   snakemake --cores 2 --configfile config/demo.yaml      # the synthetic demo
#
# The rules live in workflow/rules/; helpers and config validation in common.smk.


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


# Every job runs in the study's image under --use-singularity / --use-apptainer (config
# `container`: docker://..., or a local .sif).
container: CONTAINER


include: "workflow/rules/data.smk"
include: "workflow/rules/archive.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/verification.smk"


onstart:
    config_snapshot()
    check_image_code()


rule all:
    default_target: True
    input:
        final_targets(),
