#!/usr/bin/env python3
"""Tiny-decoder (TAESD) reference fixtures for Atelier's Rust tests.

A small random diffusers `AutoencoderTiny` (16 channels instead of 64, the real block layout),
saved three ways, and what diffusers computes with it:

    taesd/tiny/                        the diffusers folder (config.json + safetensors)
    taesd/taesd_decoder.safetensors    the same decoder in the original TAESD layout
    taesd/taesd_encoder.safetensors    (`N.weight`, as ComfyUI's models/vae_approx holds it)
    taesd/io.safetensors               latents -> decoded, pixels -> encoded

    /root/refenv/bin/python tests/reference/make_reference_taesd.py   # from the repo root
"""

from pathlib import Path

import torch
from diffusers import AutoencoderTiny
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parents[1] / "fixtures" / "reference" / "taesd"


def main():
    torch.manual_seed(11)
    ch = (16, 16, 16, 16)
    vae = AutoencoderTiny(
        encoder_block_out_channels=ch,
        decoder_block_out_channels=ch,
        latent_channels=4,
    ).eval()
    OUT.mkdir(parents=True, exist_ok=True)
    vae.save_pretrained(OUT / "tiny", safe_serialization=True)

    state = vae.state_dict()
    dec, enc = {}, {}
    for k, v in state.items():
        parts = k.split(".")
        if parts[0] == "decoder" and parts[1] == "layers":
            # The original decoder starts with a parameterless Clamp at index 0.
            dec[".".join([str(int(parts[2]) + 1)] + parts[3:])] = v.contiguous()
        elif parts[0] == "encoder" and parts[1] == "layers":
            enc[".".join(parts[2:])] = v.contiguous()
    save_file(dec, str(OUT / "taesd_decoder.safetensors"))
    save_file(enc, str(OUT / "taesd_encoder.safetensors"))

    g = torch.Generator().manual_seed(3)
    latents = torch.randn((1, 4, 8, 12), generator=g) * 2.0
    pixels = torch.rand((1, 3, 64, 40), generator=g) * 2.0 - 1.0
    with torch.no_grad():
        decoded = vae.decode(latents).sample
        encoded = vae.encode(pixels).latents
    save_file(
        {
            "latents": latents.contiguous(),
            "decoded": decoded.contiguous(),
            "pixels": pixels.contiguous(),
            "encoded": encoded.contiguous(),
        },
        str(OUT / "io.safetensors"),
    )
    print("decoded", tuple(decoded.shape), "encoded", tuple(encoded.shape))


if __name__ == "__main__":
    main()
