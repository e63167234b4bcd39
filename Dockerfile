# The image the Helm chart runs: Ray 2.60's CUDA image + phifleet with the pinned dependency set.
#   docker build -t ghcr.io/phifleet/phifleet:0.2.0 .
# (Not buildable on the development machines: they have no container engine.)
FROM rayproject/ray:2.60.0-py311-cu128

# The Ray image's user (uid 1000, gid 100): the chart's securityContext runs it non-root.
USER ray
WORKDIR /home/ray/phifleet
ENV OMP_NUM_THREADS=1 \
    RAY_SERVE_THROUGHPUT_OPTIMIZED=1 \
    RAY_SERVE_ENABLE_DIRECT_INGRESS=0

COPY --chown=ray:users pyproject.toml constraints.txt README.md ./
# The folders pyproject.toml maps under the one import root `phifleet` (phi4-tiny ships inside engine/).
COPY --chown=ray:users phifleet ./phifleet
COPY --chown=ray:users engine ./engine
COPY --chown=ray:users protocol ./protocol
COPY --chown=ray:users jobs ./jobs
COPY --chown=ray:users serve ./serve
COPY --chown=ray:users cluster ./cluster
COPY --chown=ray:users helm ./helm
# constraints.txt pins torch==2.13.0, which PyTorch's cu128 index satisfies with its CUDA build (2.13.0+cu128).
RUN pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cu128 \
      -c constraints.txt ".[azure]" \
 && phifleet --version
