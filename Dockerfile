# The image every Kubernetes definition names (cluster/kuberay/*.yaml, kustomization.yaml `images`):
# Ray 2.60.0 on Python 3.11 with CUDA 12.8, plus sqlray and its pinned stack installed from this repository.
#   make image IMAGE=<registry>/sqlray:0.1.0 && docker push <registry>/sqlray:0.1.0
# The base is pinned to the Ray release sqlray pins (pyproject: ray==2.60.0); Ray pods must all run it.
FROM rayproject/ray:2.60.0-py311-cu128

# torch first, in its own layer, built for the base image's CUDA (pyproject accepts any torch>=2.4; the
# Makefile pins 2.13.0 for the CPU install, this is the same release for CUDA 12.8).
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

# The repository at /app/sqlray: the RayJob's --config path points into it. The Ray image's non-root user
# `ray` (uid 1000, group users = gid 100) owns it and runs everything, as in the base image; numeric ids so
# the kubelet can enforce runAsNonRoot.
USER 0
RUN mkdir -p /app/sqlray && chown 1000:100 /app/sqlray
USER 1000:100
WORKDIR /app/sqlray
COPY --chown=1000:100 . .

# Not editable: the `sqlray` package (pyproject maps the repository root to it) goes to site-packages, with
# vLLM (its CUDA build; the serving engine the Serve configs name) pinned to the same torch.
RUN pip install --no-cache-dir ".[vllm]" && rm -rf build sqlray.egg-info
