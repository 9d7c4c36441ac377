#!/usr/bin/env python3
"""Loads a `runner export` file into the report's PyTorch module and checks its output.

usage: check_export.py WEIGHTS.safetensors INPUT.f32 EXPECTED.f32

The module is the one the file's metadata names (`MlpG`, `DcganG`, `ClassicG`, `MlpD`,
`DcganD`, `ClassicD` of bench/pytorch_reference.py), loaded with
`load_state_dict(strict=True)`, in evaluation mode; the input (G: latents, D: images) and the
runner's output for it (G: images, D: logits) are raw little-endian float32. Exits 1 when the
outputs differ by more than 1e-4. Reads safetensors with the standard library and torch alone
(no numpy, no safetensors package needed).
"""
import json
import struct
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import pytorch_reference  # noqa: E402

DTYPES = {"F32": torch.float32, "I64": torch.int64}


def load_safetensors(path):
    raw = Path(path).read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    metadata = header.pop("__metadata__", {})
    body = bytearray(raw[8 + size :])
    tensors = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        dtype = DTYPES[info["dtype"]]
        tensors[name] = torch.frombuffer(body[start:end], dtype=dtype).reshape(info["shape"]).clone()
    return tensors, metadata


def floats(path, shape=(-1,)):
    """A raw little-endian float32 file as a tensor of `shape`."""
    values = torch.frombuffer(bytearray(Path(path).read_bytes()), dtype=torch.float32)
    return values.reshape(shape)


def image_side(arch):
    """The side of the images `arch` makes and judges."""
    return 28 if arch == "gan" else 32


def main():
    weights, input_path, expected_path = sys.argv[1:4]
    state, metadata = load_safetensors(weights)
    module = getattr(pytorch_reference, metadata["ganrunner.module"])()
    module.load_state_dict(state, strict=True)
    module.eval()
    expected = floats(expected_path)
    with torch.no_grad():
        if metadata["ganrunner.net"] == "generator":
            got = module(floats(input_path, (-1, int(metadata["ganrunner.latent_dim"]))))
        else:
            side = image_side(metadata["ganrunner.arch"])
            images = floats(input_path, (-1, 1, side, side))
            if isinstance(module, pytorch_reference.DcganD):
                # The runner's D gives logits: the report's DcganD without its final sigmoid.
                got = module.adv_layer[0](module.model(images).flatten(1))
            else:
                got = module(images)
        got = got.reshape(-1)
    diff = (got - expected).abs().max().item()
    print(f"{metadata['ganrunner.module']}: {len(state)} tensors loaded strictly; largest difference {diff:.2e}")
    sys.exit(0 if diff <= 1e-4 else 1)


if __name__ == "__main__":
    main()
