# syntax=docker/dockerfile:1
# The StormFusion-SEVIR image: CUDA PyTorch, torch-geometric, pysteps, this package and the
# LPIPS weights, so that `snakemake --use-singularity` runs every step offline.
#
#   docker build -t ghcr.io/stormfusion/stormfusion-sevir:0.1.0 .
#   apptainer build stormfusion-sevir.sif docker-daemon://ghcr.io/stormfusion/stormfusion-sevir:0.1.0
#
# Versions are pinned here and kept consistent with pyproject.toml and envs/stormfusion.yaml
# (tests/test_envs.py checks the pins against pyproject's floors).
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ARG PYTHON_VERSION=3.12
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ARG TORCH_GEOMETRIC_VERSION=2.8.1
ARG LPIPS_VERSION=0.1.4
# torchvision's AlexNet weights (LPIPS backbone); the suffix is the file's SHA-256 prefix.
ARG ALEXNET_URL=https://download.pytorch.org/models/alexnet-owt-7be5be79.pth
ARG USER_UID=1000

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    TORCH_HOME=/opt/torch \
    MPLCONFIGDIR=/tmp/matplotlib
ENV PATH=/opt/venv/bin:$PATH

RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      python${PYTHON_VERSION} python${PYTHON_VERSION}-venv ca-certificates curl git \
      libgl1 libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/* \
 && python${PYTHON_VERSION} -m venv ${VIRTUAL_ENV}

# torch first and alone, from the CUDA index, so no later dependency swaps the build.
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"

# The runtime dependencies at the versions the test suite runs with (pyproject.toml gives
# only floors); lpips without dependencies: only its linear-layer weights are used.
RUN pip install \
      "torch-geometric==${TORCH_GEOMETRIC_VERSION}" \
      "numpy==2.4.6" "scipy==1.17.1" "pandas==3.1.1" "h5py==3.16.0" \
      "xarray==2026.9.0" "zarr==3.1.6" "numcodecs==0.16.6" "dask==2026.8.0" \
      "boto3==1.44.5" "tqdm==4.70.1" "pyyaml==6.0.3" "jsonschema==4.26.0" \
      "matplotlib==3.11.2" "pysteps==1.21.5" "opencv-python-headless==5.0.0.93" \
      "scikit-image==0.26.0" "snakemake==9.27.1" \
 && pip install --no-deps "lpips==${LPIPS_VERSION}" \
 && test -f "$(python -c 'import importlib.util as u; print(u.find_spec("lpips").submodule_search_locations[0])')/weights/v0.1/alex.pth"

# The LPIPS backbone, fetched at build time into the image's torch cache (checked against
# the SHA-256 prefix in its name), so scoring never downloads anything.
RUN mkdir -p ${TORCH_HOME}/hub/checkpoints \
 && curl -fsSL --retry 5 -o ${TORCH_HOME}/hub/checkpoints/alexnet-owt-7be5be79.pth "${ALEXNET_URL}" \
 && sha256sum ${TORCH_HOME}/hub/checkpoints/alexnet-owt-7be5be79.pth | grep -q '^7be5be79' \
 && chmod -R a+rX ${TORCH_HOME}

# The package last (changes most often); dependencies are already in place.
WORKDIR /opt/stormfusion
COPY pyproject.toml README.md ./
COPY stormfusion ./stormfusion
RUN pip install --no-deps . \
 && stormfusion --version

RUN useradd --create-home --uid ${USER_UID} --shell /bin/bash stormfusion
USER stormfusion
WORKDIR /work
CMD ["stormfusion", "--help"]
