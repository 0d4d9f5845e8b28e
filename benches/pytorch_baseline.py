#!/usr/bin/env python3
"""The PyTorch + diffusers baseline for Atelier's speed and memory figures (issue 14).

Runs the same diffusers folder the way `atelier generate --verbose` does and prints the same
stages: model load, text encoder, each UNet step, VAE decode (full, or tiny with --tiny), and
peak RSS. CPU, fp32, `torch.set_num_threads(--threads)`. Never a test dependency: run it in a
throw-away venv (`pip install torch diffusers transformers`), interleaved with Atelier's runs:

    python benches/pytorch_baseline.py --model DIR --size 512 --steps 1 [--tiny TAESD_DIR]
    atelier generate --model DIR --prompt "a cat" --steps 1 --guidance 1 --width 512 \
        --height 512 --sampler ddim --no-gallery --out x.png --verbose [--decoder tiny ...]
"""

import argparse
import resource
import time

import torch
from diffusers import AutoencoderTiny, DDIMScheduler, StableDiffusionPipeline


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--guidance", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tiny", help="an AutoencoderTiny folder: decode with it")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    t = time.perf_counter()
    pipe = StableDiffusionPipeline.from_pretrained(
        a.model, torch_dtype=torch.float32, safety_checker=None, requires_safety_checker=False
    )
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    # A folder written without a tokenizer_config.json leaves this unbounded.
    pipe.tokenizer.model_max_length = min(pipe.tokenizer.model_max_length, 77)
    if a.tiny:
        pipe.vae = AutoencoderTiny.from_pretrained(a.tiny, torch_dtype=torch.float32)
    print(f"model {time.perf_counter() - t:.2f} s")
    steps = []
    last = [time.perf_counter()]

    def on_step(_pipe, _i, _t, kw):
        now = time.perf_counter()
        steps.append(now - last[0])
        last[0] = now
        return kw

    with torch.inference_mode():
        t = time.perf_counter()
        pe, ne = pipe.encode_prompt("a cat", "cpu", 1, a.guidance > 1.0, "")
        print(f"text {time.perf_counter() - t:.2f} s")
        g = torch.Generator().manual_seed(1)
        last[0] = time.perf_counter()
        latents = pipe(
            prompt_embeds=pe, negative_prompt_embeds=ne, num_inference_steps=a.steps,
            guidance_scale=a.guidance, width=a.size, height=a.size, generator=g,
            output_type="latent", callback_on_step_end=on_step,
        ).images
        for i, s in enumerate(steps):
            print(f"step {i + 1} {s:.2f} s")
        t = time.perf_counter()
        pipe.vae.decode(latents / pipe.vae.config.scaling_factor)
        print(f"decode{' (tiny)' if a.tiny else ''} {time.perf_counter() - t:.2f} s")
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak RSS {rss_kb / 1024 / 1024:.2f} GB")


if __name__ == "__main__":
    main()
