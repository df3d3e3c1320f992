# syntax=docker/dockerfile:1
#
# RunPod Serverless worker for gpt-oss on vLLM (see docs/RUNPOD.md).
#
#   docker build -t gpt-oss-worker .
#   docker build --build-arg MODEL=openai/gpt-oss-20b -t gpt-oss-worker:20b .   # weights baked in
#   (a gated or private model: add --secret id=hf_token,env=HF_TOKEN)
#
# The base is the vLLM image of the pinned release: its vLLM, torch and CUDA are used as
# they are. tests/unit/test_dockerfile.py checks this tag against worker.VLLM_VERSION and
# the pyproject pins.
FROM vllm/vllm-openai:v0.32.0

# The base starts `vllm serve`; this image runs the worker instead (CMD at the end).
ENTRYPOINT []

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    HF_HUB_DISABLE_TELEMETRY=1

# --- Optional: bake a model's weights into the image --------------------------------------
# Done before the source is copied, so a code change does not download the weights again.
# gpt-oss repos also hold `original/` and `metal/` copies of the weights: skipped.
ARG MODEL=""
ARG MODEL_REVISION=""
RUN --mount=type=secret,id=hf_token,env=HF_TOKEN,required=false \
    if [ -n "$MODEL" ]; then \
      python3 -c "import sys; from huggingface_hub import snapshot_download; \
snapshot_download(sys.argv[1], revision=sys.argv[2] or None, local_dir='/models/baked', \
ignore_patterns=['original/*', 'metal/*', '*.pth'])" "$MODEL" "$MODEL_REVISION" \
      && rm -rf /models/baked/.cache; \
    fi
# Baked: serve the local copy under the repo's name, never touching the Hub at run time.
# Not baked: these stay empty, which the worker treats as unset.
ENV SERVED_MODEL_NAME=${MODEL}
ENV MODEL=${MODEL:+/models/baked} \
    HF_HUB_OFFLINE=${MODEL:+1}

# --- The worker ------------------------------------------------------------------------------
# The install step modal_app.py builds its image with too (scripts/image-install.sh says why
# each part is there): one Harmony package (oss-harmony); the worker's dependencies and the
# runpod extra under a constraint file of the engine stack the base installed (vLLM, torch,
# CUDA libraries, kernels, tokenizers), so they can never move it (a conflict fails the
# build); the `loaders` extra is fastsafetensors, the GPU default weight loader; then the
# package itself, without dependencies, so a code change reinstalls nothing.
WORKDIR /opt/gpt-oss-worker
COPY pyproject.toml ./
COPY scripts/image-install.sh scripts/
RUN bash scripts/image-install.sh deps runpod loaders
COPY . .
RUN python3 -m pip install --no-deps .
# vLLM is the pinned release, and the Harmony vocabulary loads with no network.
RUN --network=none bash scripts/image-install.sh check

# --- User ----------------------------------------------------------------------------------
# Root by default: RunPod mounts network volumes (/runpod-volume, the weight cache) owned by
# root, so a non-root worker could not write its cache there. Where no such volume is used,
# build with --build-arg WORKER_USER=worker to run as an unprivileged user.
ARG WORKER_USER=root
RUN if [ "$WORKER_USER" != "root" ]; then \
      useradd --create-home --uid 1000 "$WORKER_USER" \
      && mkdir -p /models && chown -R "$WORKER_USER" /models /opt/gpt-oss-worker; \
    fi
USER ${WORKER_USER}

CMD ["python3", "-m", "worker", "runpod"]
