#!/usr/bin/env python3
"""Loads a `runner export` file into the report's PyTorch module and checks its output.

usage: check_export.py WEIGHTS.safetensors Z.f32 EXPECTED.f32

The module is the one the file's metadata names (`MlpG`, `DcganG`, `ClassicG` of
bench/pytorch_reference.py), loaded with `load_state_dict(strict=True)`; z and the runner's
output for it are raw little-endian float32. Exits 1 when the outputs differ by more than
1e-4. Reads safetensors with the standard library and torch alone (no numpy, no safetensors
package needed).
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


def main():
    weights, z_path, expected_path = sys.argv[1:4]
    state, metadata = load_safetensors(weights)
    module = getattr(pytorch_reference, metadata["ganrunner.module"])()
    module.load_state_dict(state, strict=True)
    module.eval()
    latent = int(metadata["ganrunner.latent_dim"])
    z = torch.frombuffer(bytearray(Path(z_path).read_bytes()), dtype=torch.float32).reshape(-1, latent)
    expected = torch.frombuffer(bytearray(Path(expected_path).read_bytes()), dtype=torch.float32)
    with torch.no_grad():
        got = module(z).reshape(-1)
    diff = (got - expected).abs().max().item()
    print(f"{metadata['ganrunner.module']}: {len(state)} tensors loaded strictly; largest difference {diff:.2e}")
    sys.exit(0 if diff <= 1e-4 else 1)


if __name__ == "__main__":
    main()
