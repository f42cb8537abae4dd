"""The serving contract: the names and limits that the exporter, the clients and tests share.
Plain constants, no TensorFlow: ``serving/`` reads them without loading it."""

from pathlib import Path

MODEL_NAME = "mnist"
GRPC_PORT = 8500
REST_PORT = 8501

# serving_default: raw pixels [batch, 28, 28], uint8 0..255 (scaling happens in the graph).
SIGNATURE_PIXELS = "serving_default"
# The same with float32 pixels 0..255, for clients that cannot send uint8.
SIGNATURE_PIXELS_FLOAT = "predict_float"
# Encoded PNG, JPEG, GIF or BMP bytes [batch]; REST clients send {"b64": "..."}.
SIGNATURE_IMAGE_BYTES = "predict_image"

INPUT_PIXELS = "images"
INPUT_IMAGE_BYTES = "image_bytes"

OUTPUT_PROBABILITIES = "probabilities"  # float32 [batch, 10]
OUTPUT_DIGIT = "digit"  # int64 [batch]

IMAGE_SIZE = 28
NUM_CLASSES = 10
MAX_BATCH = 1024  # every signature refuses larger requests (InvalidArgument); split them

# Every signature, client and data check applies this one rule: it refuses, never rounds or clips.
PIXEL_MAX = 255
PIXEL_RULE = "pixels must be whole numbers 0..255 (no NaN, infinity or fraction)"


def pixel_problem(pixels) -> str | None:
    """What breaks the pixel rule in a NumPy array, or None (NaN fails every comparison)."""
    if pixels.dtype.kind not in "fiu":
        return f"dtype {pixels.dtype}; {PIXEL_RULE}"
    if pixels.size and not (
        pixels.min() >= 0 and pixels.max() <= PIXEL_MAX and (pixels % 1 == 0).all()
    ):
        return PIXEL_RULE
    return None


# predict_image takes only the formats whose size it reads from the header before decoding,
# told apart by these leading bytes; anything else (JPEG XL, WebP, TIFF...) is refused unread.
IMAGE_MAGIC = {"PNG": b"\x89PNG\r\n\x1a\n", "JPEG": b"\xff\xd8\xff", "GIF": b"GIF8", "BMP": b"BM"}
IMAGE_END = {"JPEG": b"\xff\xd9", "GIF": b";"}  # a file that does not end so is cut short
# Bounds on what one image and one request may cost, checked on the headers before anything is
# decoded (InvalidArgument). A pass is a GIF frame or a JPEG scan: each costs a pass over the
# image's pixels. The worst request within them costs under 1 s and 1.5 GB (docs/testing.md).
MAX_IMAGE_PIXELS = 1024 * 1024  # width x height; MNIST digits are 28x28
MAX_IMAGE_PASSES = 16
MAX_REQUEST_PIXELS = 8 * 1024 * 1024  # the sum of width x height x passes over the request
MAX_REQUEST_BYTES = 16 * 1024 * 1024  # encoded bytes per request
MAX_REQUEST_GIF_BYTES = 512 * 1024  # of them GIF: finding its frames reads every byte
# An HTML canvas draws strokes in alpha on a transparent background; other images read as grey.
ALPHA_RULE = "a PNG with a fully transparent pixel is read by its alpha channel (canvas ink)"
# The bounds above in words, for the model card: what is refused before anything is decoded.
REFUSED = [
    f"more than {MAX_BATCH} inputs in one request",
    f"float pixels (predict_float) that break the rule: {PIXEL_RULE}",
    "images other than PNG, JPEG, GIF or BMP (told by their first bytes), or cut short",
    f"an image over {MAX_IMAGE_PIXELS:,} pixels or {MAX_IMAGE_PASSES} GIF frames or JPEG scans",
    f"a request over {MAX_REQUEST_PIXELS:,} pixels (each frame and scan counted), "
    f"{MAX_REQUEST_BYTES:,} bytes or {MAX_REQUEST_GIF_BYTES:,} bytes of GIF",
]

SIGNATURES = [  # (name, its one input tensor, that tensor's dtype, shape and values)
    (SIGNATURE_PIXELS, INPUT_PIXELS, "uint8 [batch, 28, 28], pixels 0..255"),
    (SIGNATURE_PIXELS_FLOAT, INPUT_PIXELS, "float32 [batch, 28, 28], pixels 0..255"),
    (SIGNATURE_IMAGE_BYTES, INPUT_IMAGE_BYTES, "string [batch], encoded PNG/JPEG/GIF/BMP"),
]
SIGNATURE_OUTPUTS = (
    f"{OUTPUT_PROBABILITIES}: float32 [batch, {NUM_CLASSES}], {OUTPUT_DIGIT}: int64 [batch]"
)


def query_examples(version: str | None) -> str:
    """How to ask TF Serving for this model: curl (a blank image), our REST and gRPC client."""
    at = f"/versions/{version}" if version else ""
    blank = "$(python3 -c 'print([[[0] * 28] * 28])')"
    return (
        f"curl -s http://localhost:{REST_PORT}/v1/models/{MODEL_NAME}{at}:predict \\\n"
        f'  -d "{{\\"signature_name\\": \\"{SIGNATURE_PIXELS}\\", \\"instances\\": {blank}}}"\n'
        f"python -m serving predict --rest http://localhost:{REST_PORT} digit.png"
        + (f" --version {version}" if version else "")
        + f"\npython -m serving predict --grpc localhost:{GRPC_PORT} --mnist-test 0:16"
    )


WARMUP_FILE = "tf_serving_warmup_requests"  # under assets.extra/, read by TF Serving at load
RUN_INFO_FILE = "mnist_job.json"  # under assets.extra/: the config and metrics that made it

# Files both CLIs read. The job verifies the MNIST cache before it writes it: clients trust it.
CACHE_DIR_VARIABLE = "MNIST_JOB_CACHE_DIR"
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "mnist-job"
MNIST_FILE = "mnist.npz"
REPORT_FILE = "metrics.json"  # in a finished run directory
CARD_MARKDOWN, CARD_JSON = "model_card.md", "model_card.json"  # under assets.extra/
