"""The serving contract: names shared by the exporter (job/export), the clients and tests.

Change a name here and every side changes with it; nothing else spells these strings.
"""

from pathlib import Path

MODEL_NAME = "mnist"
GRPC_PORT = 8500
REST_PORT = 8501

# serving_default: raw pixels [batch, 28, 28], uint8 0..255 (scaling happens in the graph).
SIGNATURE_PIXELS = "serving_default"
# The same with float32 pixels 0..255, for clients that cannot send uint8.
SIGNATURE_PIXELS_FLOAT = "predict_float"
# Encoded PNG or JPEG bytes [batch]; REST clients send {"b64": "..."}.
SIGNATURE_IMAGE_BYTES = "predict_image"

INPUT_PIXELS = "images"
INPUT_IMAGE_BYTES = "image_bytes"

OUTPUT_PROBABILITIES = "probabilities"  # float32 [batch, 10]
OUTPUT_DIGIT = "digit"  # int64 [batch]

IMAGE_SIZE = 28
NUM_CLASSES = 10
MAX_BATCH = 1024  # every signature refuses larger requests (InvalidArgument); split them
# predict_image reads each image's size from its header and refuses larger images before
# decoding them (InvalidArgument): a small file can claim a huge size. MNIST digits are 28x28.
MAX_IMAGE_PIXELS = 4_000_000

WARMUP_FILE = "tf_serving_warmup_requests"  # under assets.extra/, read by TF Serving at load
RUN_INFO_FILE = "mnist_job.json"  # under assets.extra/: the config and metrics that made it

# Files both CLIs read. The MNIST cache: the job verifies the arrays before it writes this
# file, so clients read it as it is.
CACHE_DIR_VARIABLE = "MNIST_JOB_CACHE_DIR"
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "mnist-job"
MNIST_FILE = "mnist.npz"
REPORT_FILE = "metrics.json"  # in a finished run directory
CARD_MARKDOWN, CARD_JSON = "model_card.md", "model_card.json"  # under assets.extra/
