#!/usr/bin/env python3
"""ControlNet reference fixtures for Atelier's Rust tests.

Tiny random ControlNets made from the tiny models' own UNets with diffusers'
`ControlNetModel.from_unet` (as training starts), their zero convolutions (and the condition
embedding's last convolution) re-drawn non-zero so the control changes the picture, and the
pictures diffusers' `StableDiffusionControlNetPipeline` / `StableDiffusionXLControlNetPipeline`
make with them.

Runs after make_reference.py and make_reference_more.py (it loads `tiny-sd15/`, `tiny-sdxl/`,
`noise.safetensors`, `noise_sdxl.safetensors`) and writes only under
`tests/fixtures/reference/controlnet/`:

    sd15-a/, sd15-b/          two ControlNets for tiny-sd15 (diffusers folders, f32)
    sdxl-a/                   one for tiny-sdxl (the `text_time` add embedding)
    control-a.png, control-b.png   64x64 scribbles, white strokes on black
    expected_*.png            one per case of cases_controlnet.json
    cases_controlnet.json     every case: model, ControlNets with image/scale/start/end, guess
                              mode, negative prompt, guidance, expected picture

    /root/refenv/bin/python tests/reference/make_reference_controlnet.py   # from the repo root

Every case: DDIM 10 steps, eta 0, the prompt of the other cases, 64x64, the noise file passed as
`latents=`, as the no-control cases (`expected.png`, `expected_sdxl.png`).
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_reference as base  # noqa: E402
import make_reference_more as more  # noqa: E402

from diffusers import (  # noqa: E402
    ControlNetModel,
    StableDiffusionControlNetPipeline,
    StableDiffusionXLControlNetPipeline,
)

OUT_DIR = base.OUT_DIR
CN_DIR = OUT_DIR / "controlnet"
PROMPT = base.PROMPT
NEGATIVE_PROMPT = base.NEGATIVE_PROMPT
EMBED_CHANNELS = (8, 8, 16, 16)          # three stride-2 convs: the VAE's factor 8


def scribble(kind):
    img = Image.new("RGB", (64, 64), (0, 0, 0))
    d = ImageDraw.Draw(img)
    if kind == "a":
        d.ellipse((12, 10, 50, 48), outline=(255, 255, 255), width=3)
        d.line((4, 58, 60, 40), fill=(255, 255, 255), width=3)
    else:
        d.rectangle((8, 20, 40, 56), outline=(255, 255, 255), width=3)
        d.line((30, 4, 58, 30), fill=(255, 255, 255), width=4)
    return img


def make_controlnet(unet, seed, name):
    torch.manual_seed(seed)
    cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=EMBED_CHANNELS)
    gen = torch.Generator().manual_seed(seed + 1)
    zero = [cn.controlnet_cond_embedding.conv_out, cn.controlnet_mid_block,
            *cn.controlnet_down_blocks]
    with torch.no_grad():
        for conv in zero:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.3)
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=gen) * 0.1)
        # A trained ControlNet's encoder drifts from the UNet's: so does this one.
        for p in cn.down_blocks.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    cn = cn.to(torch.float32).eval()
    cn.save_pretrained(CN_DIR / name, safe_serialization=True)
    return ControlNetModel.from_pretrained(CN_DIR / name).eval()


def to_png(images, path):
    u8 = np.round(images[0] * 255.0).clip(0, 255).astype(np.uint8)
    Image.fromarray(u8).save(path)


def main():
    CN_DIR.mkdir(parents=True, exist_ok=True)
    images = {k: scribble(k) for k in ("a", "b")}
    for k, img in images.items():
        img.save(CN_DIR / f"control-{k}.png")

    sd = more.load_sd15(torch.float32)
    cn_a = make_controlnet(sd.unet, 6101, "sd15-a")
    cn_b = make_controlnet(sd.unet, 6102, "sd15-b")
    noise = more.load_noise("noise.safetensors")
    cases = []

    def sd_case(name, nets, imgs, scales, start, end, guess=False, negative=NEGATIVE_PROMPT,
                guidance=base.GUIDANCE):
        single = len(nets) == 1
        pipe = StableDiffusionControlNetPipeline(
            vae=sd.vae, text_encoder=sd.text_encoder, tokenizer=sd.tokenizer, unet=sd.unet,
            controlnet=[c for _, c in nets] if not single else nets[0][1],
            scheduler=sd.scheduler, safety_checker=None, feature_extractor=None,
            requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        with torch.no_grad():
            out = pipe(prompt=PROMPT, negative_prompt=negative,
                       image=[images[i] for i in imgs] if not single else images[imgs[0]],
                       num_inference_steps=base.STEPS, guidance_scale=guidance, eta=0.0,
                       latents=noise.clone(), height=64, width=64,
                       controlnet_conditioning_scale=scales if not single else scales[0],
                       control_guidance_start=start if not single else start[0],
                       control_guidance_end=end if not single else end[0],
                       guess_mode=guess, output_type="np")
        expected = f"expected_controlnet_{name}.png"
        to_png(out.images, CN_DIR / expected)
        cases.append({
            "name": name, "model_dir": "tiny-sd15", "noise": "noise.safetensors",
            "prompt": PROMPT, "negative_prompt": negative, "steps": base.STEPS,
            "guidance_scale": guidance, "sampler": "ddim", "width": 64, "height": 64,
            "guess_mode": guess,
            "controlnets": [{"dir": f"controlnet/{n}", "image": f"controlnet/control-{i}.png",
                             "scale": s, "start": a, "end": b}
                            for (n, _), i, s, a, b in zip(nets, imgs, scales, start, end)],
            "expected": f"controlnet/{expected}",
        })
        print(name, float(out.images.mean()))

    a, b = ("sd15-a", cn_a), ("sd15-b", cn_b)
    sd_case("scale1", [a], ["a"], [1.0], [0.0], [1.0])
    sd_case("scale05", [a], ["a"], [0.5], [0.0], [1.0])
    sd_case("noneg", [a], ["a"], [1.0], [0.0], [1.0], negative="")
    sd_case("start_end", [a], ["a"], [1.0], [0.2], [0.7])
    sd_case("guess", [a], ["a"], [1.0], [0.0], [1.0], guess=True, guidance=4.0)
    sd_case("two", [a, b], ["a", "b"], [0.8, 0.6], [0.0, 0.1], [1.0, 0.9])

    xl = more.load_sdxl(torch.float32)
    cn_xl = make_controlnet(xl.unet, 6103, "sdxl-a")
    noise_xl = more.load_noise("noise_sdxl.safetensors")
    pipe = StableDiffusionXLControlNetPipeline(
        vae=xl.vae, text_encoder=xl.text_encoder, text_encoder_2=xl.text_encoder_2,
        tokenizer=xl.tokenizer, tokenizer_2=xl.tokenizer_2, unet=xl.unet, controlnet=cn_xl,
        scheduler=xl.scheduler)
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        out = pipe(prompt=PROMPT, negative_prompt=NEGATIVE_PROMPT, image=images["a"],
                   num_inference_steps=10, guidance_scale=5.0, eta=0.0, latents=noise_xl.clone(),
                   height=64, width=64, controlnet_conditioning_scale=0.8, output_type="np")
    to_png(out.images, CN_DIR / "expected_controlnet_sdxl.png")
    cases.append({
        "name": "sdxl", "model_dir": "tiny-sdxl", "noise": "noise_sdxl.safetensors",
        "prompt": PROMPT, "negative_prompt": NEGATIVE_PROMPT, "steps": 10,
        "guidance_scale": 5.0, "sampler": "ddim", "width": 64, "height": 64, "guess_mode": False,
        "controlnets": [{"dir": "controlnet/sdxl-a", "image": "controlnet/control-a.png",
                         "scale": 0.8, "start": 0.0, "end": 1.0}],
        "expected": "controlnet/expected_controlnet_sdxl.png",
    })
    print("sdxl", float(out.images.mean()))
    (CN_DIR / "cases_controlnet.json").write_text(json.dumps(cases, indent=1) + "\n")


if __name__ == "__main__":
    main()
