"""The serving graphs around the trained model; scaling and decoding happen here. Not model.export:
it renames inputs and outputs (keras-team/keras#19458) and has failed with several outputs and an
input signature (keras-team/keras#21258)."""

import keras
import tensorflow as tf

from job.export import contract as c


def _classify(model: keras.Model, pixels: tf.Tensor) -> dict[str, tf.Tensor]:
    """Pixels [batch, 28, 28] in 0..255 -> the contract's outputs. Scaling lives here."""
    scaled = tf.cast(pixels, tf.float32) / 255.0
    probabilities = tf.cast(model(scaled[..., tf.newaxis], training=False), tf.float32)
    return {
        c.OUTPUT_PROBABILITIES: probabilities,
        c.OUTPUT_DIGIT: tf.argmax(probabilities, axis=1),
    }


def _checked(value: tf.Tensor, *rules: tuple) -> tf.Tensor:
    """``value``, or InvalidArgument with the message of a rule ``(condition, *message)`` that
    fails. Never tf.debugging.assert_*: a failed one prints its inputs, image bytes and all."""
    checks = [tf.debugging.Assert(tf.reduce_all(rule[0]), list(rule[1:])) for rule in rules]
    with tf.control_dependencies(checks):
        return tf.identity(value)


def _within_batch_limit(batch: tf.Tensor) -> tf.Tensor:
    limit = f"a request holds at most {c.MAX_BATCH} inputs; split it"
    return _checked(batch, (tf.shape(batch)[0] <= c.MAX_BATCH, limit))


def _of_image_shape(images: tf.Tensor) -> tf.Tensor:
    """A server feeds what a request holds, whatever the signature says; with oneDNN on, a
    convolution aborts the whole process on a wrong shape instead of refusing it."""
    return tf.ensure_shape(images, [None, c.IMAGE_SIZE, c.IMAGE_SIZE])


def _unsigned(encoded: tf.Tensor, start: int, size: int, big_endian: bool) -> tf.Tensor:
    """The unsigned integer in bytes ``start``..``start + size`` of ``encoded``."""
    long_enough = tf.strings.length(encoded) >= start + size
    encoded = _checked(encoded, (long_enough, "image bytes end inside the header"))
    raw = tf.io.decode_raw(tf.strings.substr(encoded, start, size), tf.uint8)
    weights = tf.constant([256**i for i in range(size)], tf.int64)
    if big_endian:
        weights = tf.reverse(weights, [0])
    return tf.reduce_sum(tf.reshape(tf.cast(raw, tf.int64), [size]) * weights)


def _bmp_dimension(encoded: tf.Tensor, start: int) -> tf.Tensor:
    value = _unsigned(encoded, start, 4, big_endian=False)
    return tf.abs(tf.where(value >= 2**31, value - 2**32, value))  # top-down BMPs: negative height


def _follow(step: tf.Tensor, *counts: tf.Tensor) -> list[tf.Tensor]:
    """Where each position's chain ends (``step``: each one's next; an end steps to itself) and
    each of ``counts`` summed to there: pointer doubling, log2(length) rounds, not one per link."""

    def double(moved, step, *counts):
        ahead = tf.gather(step, step)
        return [tf.reduce_any(ahead != step), ahead, *[n + tf.gather(n, step) for n in counts]]

    done = tf.while_loop(lambda moved, *_: moved, double, [True, step, *counts])
    return done[1:]


def gif_frames(encoded: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """[frames, frames larger than the screen, 1 when the blocks end at the trailer],
    read by walking the GIF's blocks without decoding (the decoder allocates each frame at
    the size its own descriptor states, whatever the screen size says)."""
    data = tf.concat([tf.cast(tf.io.decode_raw(encoded, tf.uint8), tf.int32), [0]], 0)
    last = tf.size(data) - 1  # a zero past the end: every chain that runs off ends there
    pos = tf.range(last + 1)

    def at(index):
        return tf.gather(data, tf.minimum(index, last))

    # Data sub-blocks: a size byte and that many bytes, until a zero size.
    sub_block_end = _follow(tf.where(data == 0, pos, tf.minimum(pos + data + 1, last)))[0]

    def after_sub_blocks(index):
        return tf.minimum(tf.gather(sub_block_end, tf.minimum(index, last)) + 1, last)

    def colour_table(flags):  # 3 * 2^(size + 1) bytes when the flags' top bit is set
        return tf.where(flags >= 128, 3 * tf.bitwise.left_shift(2, flags % 8), 0)

    # Blocks: 0x21 extension (label, sub-blocks), 0x2C frame (descriptor, optional colour
    # table, LZW code size, sub-blocks); anything else ends the walk (0x3B, the trailer).
    is_frame = data == 0x2C
    next_block = tf.where(
        data == 0x21,
        after_sub_blocks(pos + 2),
        tf.where(is_frame, after_sub_blocks(pos + 11 + colour_table(at(pos + 9))), pos),
    )
    too_large = is_frame & (
        (at(pos + 5) + 256 * at(pos + 6) > tf.cast(width, tf.int32))
        | (at(pos + 7) + 256 * at(pos + 8) > tf.cast(height, tf.int32))
    )
    end, frames, large = _follow(
        next_block, tf.cast(is_frame, tf.int32), tf.cast(too_large, tf.int32)
    )
    first = tf.minimum(13 + colour_table(at(10)), last)
    ends_well = tf.cast(at(end[first]) == 0x3B, tf.int32)  # the trailer
    return tf.cast(tf.stack([frames[first], large[first], ends_well]), tf.int64)


def _is(encoded: tf.Tensor, kind: str) -> tf.Tensor:
    magic = c.IMAGE_MAGIC[kind]
    return tf.equal(tf.strings.substr(encoded, 0, len(magic)), magic)


def image_header_size(encoded: tf.Tensor) -> tf.Tensor:
    """[height, width, passes] of a PNG, JPEG, GIF or BMP, read without decoding: a pass is a
    GIF frame or a JPEG scan, each a pass over the pixels. InvalidArgument for other bytes, a
    GIF frame larger than its screen or a file cut before its end."""

    def png():
        return tf.stack([_unsigned(encoded, 20, 4, True), _unsigned(encoded, 16, 4, True), 1])

    def gif():
        height, width = _unsigned(encoded, 8, 2, False), _unsigned(encoded, 6, 2, False)
        frames, too_large, trailer = tf.unstack(gif_frames(encoded, height, width))
        last_byte = tf.strings.substr(encoded, -1, 1)
        ends_well = (trailer == 1) & tf.equal(last_byte, c.IMAGE_END["GIF"])
        return _checked(
            tf.stack([height, width, frames]),
            (too_large == 0, "a GIF frame is larger than the GIF's screen"),
            (ends_well, "the GIF is cut before its end"),
        )

    def bmp():
        return tf.stack([_bmp_dimension(encoded, 22), _bmp_dimension(encoded, 18), 1])

    def jpeg():
        whole = tf.equal(tf.strings.substr(encoded, -2, 2), c.IMAGE_END["JPEG"])
        size = tf.io.extract_jpeg_shape(
            _checked(encoded, (whole, "the JPEG is cut before its end"))
        )
        scans = tf.size(tf.strings.split(encoded, sep=b"\xff\xda"), tf.int64) - 1
        return tf.concat([tf.cast(size[:2], tf.int64), [scans]], 0)

    def other():
        refused = "not a PNG, JPEG, GIF or BMP image (JPEG XL, WebP... are refused)"
        return _checked(tf.zeros([3], tf.int64), (False, refused))

    branches = {"PNG": png, "JPEG": jpeg, "GIF": gif, "BMP": bmp}
    return tf.case(
        [(_is(encoded, kind), branch) for kind, branch in branches.items()],
        default=other,
        exclusive=False,
    )


def _check_request(image_bytes: tf.Tensor, sizes: tf.Tensor) -> tf.Tensor:
    """InvalidArgument over the contract's bounds (``sizes``: [height, width, passes] each)."""
    pixels = sizes[:, 0] * sizes[:, 1]
    work = tf.reduce_sum(pixels * sizes[:, 2])
    largest = f"image larger than {c.MAX_IMAGE_PIXELS} pixels; MNIST digits are 28x28"
    passes = f"image of more than {c.MAX_IMAGE_PASSES} GIF frames or JPEG scans"
    request = f"request over {c.MAX_REQUEST_PIXELS} pixels (each frame and scan counts); split it"
    return _checked(
        image_bytes,
        (pixels <= c.MAX_IMAGE_PIXELS, largest, tf.reduce_max(pixels)),
        (sizes[:, 2] <= c.MAX_IMAGE_PASSES, passes),
        (work <= c.MAX_REQUEST_PIXELS, request, work),
    )


def _within_request_bytes(image_bytes: tf.Tensor) -> tf.Tensor:
    sizes = tf.cast(tf.strings.length(image_bytes), tf.int64)
    total, gifs = tf.reduce_sum(sizes), tf.reduce_sum(tf.where(_is(image_bytes, "GIF"), sizes, 0))
    return _checked(
        image_bytes,
        (total <= c.MAX_REQUEST_BYTES, f"request over {c.MAX_REQUEST_BYTES} bytes"),
        (gifs <= c.MAX_REQUEST_GIF_BYTES, f"over {c.MAX_REQUEST_GIF_BYTES} bytes of GIF"),
    )


def _decode_to_pixels(encoded: tf.Tensor) -> tf.Tensor:
    """Checked image bytes -> [28, 28] float32 grey 0..255, resized. A decoder per format:
    ``decode_image`` would also decode formats whose size nobody checked."""

    def png():
        rgba = tf.io.decode_png(encoded, channels=4)
        alpha = rgba[..., 3:]
        grey = tf.image.rgb_to_grayscale(rgba[..., :3])  # uint8: rounded as Pillow rounds
        transparent = tf.reduce_any(alpha == 0)  # the contract's rule: alpha is the ink
        return tf.cast(tf.where(transparent, alpha, grey), tf.float32)

    def rgb(decoded):
        return lambda: tf.cast(tf.image.rgb_to_grayscale(decoded()), tf.float32)

    image = tf.case(
        [
            (_is(encoded, "PNG"), png),
            (_is(encoded, "GIF"), rgb(lambda: tf.io.decode_gif(encoded)[0])),
            (_is(encoded, "BMP"), rgb(lambda: tf.io.decode_bmp(encoded, channels=3))),
        ],
        default=rgb(lambda: tf.io.decode_jpeg(encoded, channels=3)),
        exclusive=False,
    )
    image = tf.cond(
        tf.reduce_all(tf.equal(tf.shape(image)[:2], [c.IMAGE_SIZE, c.IMAGE_SIZE])),
        lambda: image,
        lambda: tf.image.resize(image, [c.IMAGE_SIZE, c.IMAGE_SIZE], antialias=True),
    )
    return tf.ensure_shape(image[..., 0], [c.IMAGE_SIZE, c.IMAGE_SIZE])


def decode_images(image_bytes: tf.Tensor) -> tf.Tensor:
    """A request's encoded images -> [batch, 28, 28] float32, every bound checked on the
    headers of all of them before any is decoded."""
    image_bytes = _within_request_bytes(_within_batch_limit(image_bytes))
    sizes = tf.map_fn(image_header_size, image_bytes, fn_output_signature=tf.int64)
    image_bytes = _check_request(image_bytes, tf.reshape(sizes, [-1, 3]))
    return tf.map_fn(_decode_to_pixels, image_bytes, fn_output_signature=tf.float32)


def _pixel_rule(images: tf.Tensor) -> tf.Tensor:
    """InvalidArgument when a pixel breaks the contract's rule (NaN fails every comparison)."""
    whole = (images >= 0) & (images <= c.PIXEL_MAX) & (images == tf.round(images))
    return _checked(images, (whole, c.PIXEL_RULE))


def serving_functions(model: keras.Model) -> dict[str, tf.types.experimental.PolymorphicFunction]:
    size = c.IMAGE_SIZE

    @tf.function(input_signature=[tf.TensorSpec([None, size, size], tf.uint8, c.INPUT_PIXELS)])
    def serve_pixels(images):
        return _classify(model, _within_batch_limit(_of_image_shape(images)))

    @tf.function(input_signature=[tf.TensorSpec([None, size, size], tf.float32, c.INPUT_PIXELS)])
    def serve_pixels_float(images):
        return _classify(model, _pixel_rule(_within_batch_limit(_of_image_shape(images))))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, c.INPUT_IMAGE_BYTES)])
    def serve_image_bytes(image_bytes):
        return _classify(model, decode_images(image_bytes))

    return {
        c.SIGNATURE_PIXELS: serve_pixels,
        c.SIGNATURE_PIXELS_FLOAT: serve_pixels_float,
        c.SIGNATURE_IMAGE_BYTES: serve_image_bytes,
    }


def build_archive(model: keras.Model) -> keras.export.ExportArchive:
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, function in serving_functions(model).items():
        archive.add_endpoint(name, function)
    return archive
