# The batch job. CPU by default; the GPU image: --build-arg BASE_TAG=2.21.0-gpu (make train GPU=1).
# The base tag's TensorFlow version must match tensorflow== in requirements.lock (a test checks).
ARG BASE_TAG=2.21.0
FROM tensorflow/tensorflow:${BASE_TAG}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    MNIST_JOB_CACHE_DIR=/data \
    KERAS_HOME=/tmp/keras \
    MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /app

# The runtime lock: the same versions as the virtualenv and CI (whose development lock adds
# the test and lint tools), and nothing the job does not run.
COPY requirements.lock ./
RUN python -m pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock

COPY job ./job
COPY serving ./serving

# Outputs: the MNIST cache, run directories and SavedModel exports; mount them from the host.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin mnist \
    && mkdir -p /data /app/runs /app/models \
    && chown mnist /data /app/runs /app/models
VOLUME ["/data", "/app/runs", "/app/models"]
USER 10001

# A batch job, not a service: it has no endpoint to probe, and its exit code is its health
# (0 done, 75 preempted, other codes in the README). Schedulers watch the process instead.
HEALTHCHECK NONE

ENTRYPOINT ["python", "-m", "job"]
CMD ["train"]
