"""Writes the small committed files of Atelier's hostile-input corpus (tests/hostile/).

Run by hand (`python3 tests/hostile/make_corpus.py`, needs Pillow); the outputs are
committed. Large or bomb-like inputs are made by tests/hostile.rs itself. Nothing here is
ever loaded by Python: the pickle is written with the pickle opcodes spelled out, not by
pickling a live object.
"""

import io
import os
import struct
import zipfile
import zlib

from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))


def out(*parts):
    path = os.path.join(HERE, *parts)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def gradient(w, h, mode="RGB"):
    img = Image.new("RGB", (w, h))
    img.putdata([((x * 255) // max(w - 1, 1), (y * 255) // max(h - 1, 1), 90)
                 for y in range(h) for x in range(w)])
    return img.convert(mode) if mode != "RGB" else img


# ---- images -----------------------------------------------------------------------------
gradient(32, 24).convert("CMYK").save(out("images", "cmyk.jpg"), quality=90)

gray16 = Image.new("I;16", (32, 24))
gray16.putdata([(x * 2000 + y * 500) % 65536 for y in range(24) for x in range(32)])
gray16.save(out("images", "gray16.png"))

frames = [Image.new("RGB", (16, 16), c) for c in ((200, 30, 30), (30, 200, 30))]
frames[0].save(out("images", "animated.webp"), save_all=True, append_images=frames[1:],
               duration=100, loop=0, lossless=True)

# 40 x 20 stored, EXIF orientation 6: shown rotated a quarter turn clockwise, 20 x 40.
exif = Image.Exif()
exif[0x0112] = 6
gradient(40, 20).save(out("images", "exif-rotated.jpg"), exif=exif.tobytes(), quality=95)

with open(out("images", "four-bytes.jpg"), "wb") as f:
    f.write(b"\xff\xd8\xff\xe0")

buf = io.BytesIO()
gradient(32, 24).save(buf, "PNG")
with open(out("images", "truncated.png"), "wb") as f:
    f.write(buf.getvalue()[: len(buf.getvalue()) // 2])

# ---- model files ------------------------------------------------------------------------
# A .ckpt whose pickle asks to call os.system (GLOBAL + REDUCE): a loader that executes
# pickles would create the marker file named in it.
pickle_ops = (
    b"\x80\x02"                                  # PROTO 2
    b"cposix\nsystem\n"                          # GLOBAL posix.system
    b"X\x1f\x00\x00\x00touch /tmp/atelier-pwned-marker"  # BINUNICODE (31 bytes)
    b"\x85"                                      # TUPLE1
    b"R"                                         # REDUCE
    b"."                                         # STOP
)
with zipfile.ZipFile(out("models", "reduce.ckpt"), "w", zipfile.ZIP_STORED) as z:
    z.writestr("archive/data.pkl", pickle_ops)
    z.writestr("archive/version", "3\n")

# A .ckpt whose data.pkl inflates to 100 MB of zeros from about 100 KB.
with zipfile.ZipFile(out("models", "zip-bomb.ckpt"), "w", zipfile.ZIP_DEFLATED,
                     compresslevel=9) as z:
    with z.open("archive/data.pkl", "w") as f:
        chunk = b"\0" * (1 << 20)
        for _ in range(100):
            f.write(chunk)

# ---- adjustment stacks --------------------------------------------------------------------
with open(out("stacks", "huge-values.json"), "w") as f:
    f.write('{"version": 1, "ops": [{"op": "exposure", "ev": -1e39},'
            ' {"op": "contrast", "amount": 1e300}, {"op": "levels", "gamma": 0}]}')
with open(out("stacks", "unknown-version.json"), "w") as f:
    f.write('{"version": 99, "ops": [{"op": "teleport"}]}')
with open(out("stacks", "not-json.json"), "w") as f:
    f.write('{"version": 1, "ops": [{"op": "exposure", "ev": ')
with open(out("stacks", "wrong-types.json"), "w") as f:
    f.write('{"version": 1, "ops": [{"op": "exposure", "ev": "bright"}]}')

print("corpus written to", HERE)
