#!/usr/bin/env python3
"""Build the diffusers reference fixture that Atelier's Rust tests compare against.

Purpose
-------
Creates a TINY Stable-Diffusion-1.5-architecture pipeline (UNet2DConditionModel,
AutoencoderKL, CLIPTextModel, slow CLIPTokenizer, DDIMScheduler) entirely from
configs, with random weights drawn from fixed torch seeds (nothing is downloaded),
saves it as an ordinary diffusers folder, runs it with a fixed latent noise tensor
and writes the expected images plus small debug tensors.  The Rust side loads the
same folder and the same noise and must reproduce the images (within a small
float tolerance).

How to run (from the repository root)
-------------------------------------
    python3 -m venv /root/refenv
    /root/refenv/bin/pip install torch "diffusers==0.36.0" "transformers==4.57.6" \
        safetensors numpy pillow
    /root/refenv/bin/python tests/reference/make_reference.py

(transformers 4.x is pinned on purpose: it still has the pure-Python "slow"
CLIPTokenizer, whose save_pretrained writes vocab.json + merges.txt like the real
SD 1.5 repos.  diffusers 0.36 is the newest release that works with it.)
Everything runs on the CPU in float32 and takes a few seconds.

What it writes (under tests/fixtures/reference/)
-----------------------------------------------
    tiny-sd15/                 diffusers folder (save_pretrained, safetensors):
        model_index.json
        unet/{config.json,diffusion_pytorch_model.safetensors}
        vae/{config.json,diffusion_pytorch_model.safetensors}
        text_encoder/{config.json,model.safetensors}
        tokenizer/{vocab.json,merges.txt,tokenizer_config.json,special_tokens_map.json}
        scheduler/scheduler_config.json
    noise.safetensors          {"noise": f32 [1,4,8,8]}  initial latents for both cases
    expected.png               64x64 RGB, prompt + negative prompt "blurry", CFG 7.5
    expected_cfg1.png          64x64 RGB, same prompt, guidance 1.0, no negative prompt
    debug.safetensors          intermediate tensors (see DEBUG_KEYS below)
    case.json                  exact settings, token ids, timesteps and versions
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

import diffusers
import transformers
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

REPO_ROOT = Path(__file__).resolve().parents[2]
OUT_DIR = REPO_ROOT / "tests" / "fixtures" / "reference"
MODEL_DIR = OUT_DIR / "tiny-sd15"

PROMPT = "a red cat sitting on a blue mat"
NEGATIVE_PROMPT = "blurry"
STEPS = 10
GUIDANCE = 7.5
WIDTH = HEIGHT = 64
WEIGHT_SEED = 1234
NOISE_SEED = 42

# ---------------------------------------------------------------------------
# Tokenizer: a tiny byte-level BPE vocabulary laid out exactly like CLIP's.
# ---------------------------------------------------------------------------

# Merges, in rank order.  The first few are "generic" merges that do not build a
# whole word, so a correct BPE implementation must honour the ranks (e.g.
# "sitting" is built via "in", "ing</w>" before the "s i t t" merges, and
# "blurry" ends up as several tokens).
MERGES = [
    ("i", "n"),
    ("in", "g</w>"),
    ("a", "t</w>"),
    ("r", "e"),
    ("o", "n</w>"),
    ("b", "l"),
    ("u", "e</w>"),
    ("t", "h"),
    ("th", "e</w>"),
    ("e", "r"),
    ("r", "y</w>"),
    # whole words of the prompt
    ("re", "d</w>"),
    ("c", "at</w>"),
    ("m", "at</w>"),
    ("s", "i"),
    ("si", "t"),
    ("sit", "t"),
    ("sitt", "ing</w>"),
    ("bl", "ue</w>"),
    # a few unrelated words so the vocab is not only the prompt
    ("d", "o"),
    ("do", "g</w>"),
    ("u", "n</w>"),
    ("s", "un</w>"),
    ("l", "i"),
    ("g", "h"),
    ("gh", "t</w>"),
    ("li", "ght</w>"),
    ("p", "h"),
    ("ph", "o"),
    ("t", "o</w>"),
    ("pho", "to</w>"),
    ("o", "f</w>"),
]


def bytes_to_unicode():
    """Same table as CLIP / GPT-2."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def write_tokenizer_sources(dirpath: Path):
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    for a, b in MERGES:
        tok = a + b
        assert tok not in vocab, f"duplicate merge result {tok}"
        vocab.append(tok)
    vocab.extend(["<|startoftext|>", "<|endoftext|>"])
    dirpath.mkdir(parents=True, exist_ok=True)
    with open(dirpath / "vocab.json", "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
    with open(dirpath / "merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in MERGES:
            f.write(f"{a} {b}\n")
    return len(vocab)


# ---------------------------------------------------------------------------
# Weight re-initialisation
# ---------------------------------------------------------------------------

def reinit_(model: torch.nn.Module, gen: torch.Generator, gain: float, emb_std: float = 0.5):
    """Re-draw every parameter from `gen` (deterministic, in named_parameters order).

    * norm weights (GroupNorm / LayerNorm): 1 + 0.1 * randn
    * norm biases:                          0.05 * randn
    * conv / linear weights:                randn * gain / sqrt(fan_in)
    * other biases:                         0.02 * randn
    * embeddings (CLIP token / position):   randn * emb_std
    diffusers zero-inits some layers (UNet conv_out, ...), so this matters.
    """
    norm_params = set()
    emb_params = set()
    for mname, m in model.named_modules():
        if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
            for pname, _ in m.named_parameters(recurse=False):
                norm_params.add(f"{mname}.{pname}" if mname else pname)
        if isinstance(m, torch.nn.Embedding):
            for pname, _ in m.named_parameters(recurse=False):
                emb_params.add(f"{mname}.{pname}" if mname else pname)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if name in norm_params:
                v = 1.0 + 0.1 * r if name.endswith("weight") else 0.05 * r
            elif name in emb_params:
                v = emb_std * r
            elif p.dim() >= 2:
                fan_in = p[0].numel()
                v = r * (gain / fan_in**0.5)
            else:
                v = 0.02 * r
            p.copy_(v)


# ---------------------------------------------------------------------------


def build_pipeline():
    tok_src = OUT_DIR / "_tok_src"
    vocab_size = write_tokenizer_sources(tok_src)
    tokenizer = CLIPTokenizer(
        vocab_file=str(tok_src / "vocab.json"),
        merges_file=str(tok_src / "merges.txt"),
        unk_token="<|endoftext|>",
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        model_max_length=77,
    )
    for f in ("vocab.json", "merges.txt"):
        (tok_src / f).unlink()
    tok_src.rmdir()

    gen = torch.Generator().manual_seed(WEIGHT_SEED)

    text_config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        projection_dim=32,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    text_encoder = CLIPTextModel(text_config).eval()
    reinit_(text_encoder, gen, gain=1.0, emb_std=0.5)

    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=2,
        norm_num_groups=8,
    ).eval()
    reinit_(unet, gen, gain=1.0)

    vae = AutoencoderKL(
        block_out_channels=(8, 8, 16, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=64,
    ).eval()
    reinit_(vae, gen, gain=1.0)

    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
        timestep_spacing="leading",
    )

    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_case(pipe, noise, guidance, negative_prompt, capture):
    """Run one case; capture first UNet call and per-step latents into `capture`."""
    unet_calls = []

    def unet_hook(module, args, kwargs, output):
        if not unet_calls:
            sample = args[0] if args else kwargs["sample"]
            t = args[1] if len(args) > 1 else kwargs["timestep"]
            out = output[0] if isinstance(output, tuple) else output.sample
            unet_calls.append((sample.detach().clone(), torch.as_tensor(t).clone(), out.detach().clone()))

    step_latents = []

    def on_step_end(p, i, t, cbk):
        step_latents.append(cbk["latents"].detach().clone())
        return cbk

    h = pipe.unet.register_forward_hook(unet_hook, with_kwargs=True)
    try:
        with torch.no_grad():
            out = pipe(
                prompt=PROMPT,
                negative_prompt=negative_prompt,
                height=HEIGHT,
                width=WIDTH,
                num_inference_steps=STEPS,
                guidance_scale=guidance,
                eta=0.0,
                latents=noise.clone(),
                output_type="np",
                callback_on_step_end=on_step_end,
                callback_on_step_end_tensor_inputs=["latents"],
            )
    finally:
        h.remove()
    img = out.images  # [1, H, W, 3] float in [0,1]
    capture["unet_in"], capture["unet_t"], capture["unet_out"] = unet_calls[0]
    capture["step_latents"] = torch.stack(step_latents, 0)  # [steps, 1, 4, h, w]
    capture["image"] = torch.from_numpy(np.ascontiguousarray(img)).float()
    return img


def f64_check(noise, img_a, img_b):
    """Rerun both cases in float64 and report how far the float32 reference is from it."""
    pipe = StableDiffusionPipeline.from_pretrained(
        MODEL_DIR, safety_checker=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    pipe.to(torch.float64)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # CLIP's causal mask is built in the default dtype
    try:
        res = {}
        for name, g, neg, ref in (("expected", GUIDANCE, NEGATIVE_PROMPT, img_a),
                                  ("expected_cfg1", 1.0, None, img_b)):
            with torch.no_grad():
                x = pipe(prompt=PROMPT, negative_prompt=neg, height=HEIGHT, width=WIDTH,
                         num_inference_steps=STEPS, guidance_scale=g, eta=0.0,
                         latents=noise.double(), output_type="np").images
            d = np.abs(ref.astype(np.float64) - x)
            du8 = np.abs(np.round(ref.astype(np.float64) * 255) - np.round(x * 255))
            res[name] = {"image_max_abs": float(d.max()), "image_mean_abs": float(d.mean()),
                         "u8_max_abs": int(du8.max()), "u8_pixels_differing": int((du8 > 0).sum())}
    finally:
        torch.set_default_dtype(prev)
    return res


def to_png(img, path):
    u8 = np.round(img[0] * 255.0).clip(0, 255).astype(np.uint8)
    Image.fromarray(u8).save(path)
    return u8


def tokens(tok, text):
    return tok(text, padding="max_length", max_length=tok.model_max_length,
               truncation=True, return_tensors="pt").input_ids


def main():
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    OUT_DIR.mkdir(parents=True, exist_ok=True)

    pipe = build_pipeline()
    pipe.save_pretrained(MODEL_DIR, safe_serialization=True)

    # Reload from disk so the run uses exactly what was saved.
    pipe = StableDiffusionPipeline.from_pretrained(
        MODEL_DIR, safety_checker=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    tok = pipe.tokenizer

    lh, lw = HEIGHT // pipe.vae_scale_factor, WIDTH // pipe.vae_scale_factor
    assert (lh, lw) == (8, 8), (lh, lw)
    noise = torch.randn((1, 4, lh, lw), generator=torch.Generator().manual_seed(NOISE_SEED),
                        dtype=torch.float32)
    save_file({"noise": noise.contiguous()}, str(OUT_DIR / "noise.safetensors"))

    ids_prompt = tokens(tok, PROMPT)
    ids_neg = tokens(tok, NEGATIVE_PROMPT)
    ids_empty = tokens(tok, "")
    with torch.no_grad():
        emb_prompt = pipe.text_encoder(ids_prompt)[0]
        emb_neg = pipe.text_encoder(ids_neg)[0]

    # Case (a): CFG 7.5 with negative prompt.
    cap_a = {}
    img_a = run_case(pipe, noise, GUIDANCE, NEGATIVE_PROMPT, cap_a)
    to_png(img_a, OUT_DIR / "expected.png")
    timesteps = [int(t) for t in pipe.scheduler.timesteps]

    # Case (b): guidance 1.0 (no CFG, so no negative prompt / uncond pass).
    cap_b = {}
    img_b = run_case(pipe, noise, 1.0, None, cap_b)
    to_png(img_b, OUT_DIR / "expected_cfg1.png")

    debug = {
        "prompt_ids": ids_prompt.to(torch.int64),                 # [1,77]
        "negative_ids": ids_neg.to(torch.int64),                  # [1,77]
        "empty_ids": ids_empty.to(torch.int64),                   # [1,77]
        "cond_embeds": emb_prompt,                                # [1,77,32]
        "uncond_embeds": emb_neg,                                 # [1,77,32]  ("blurry")
        "timesteps": torch.tensor(timesteps, dtype=torch.int64),  # [10]
        # case (a), CFG 7.5: first UNet call; batch order is [uncond, cond] as in diffusers
        "cfg_unet_in_step0": cap_a["unet_in"],                    # [2,4,8,8]
        "cfg_unet_out_step0": cap_a["unet_out"],                  # [2,4,8,8] raw eps (before CFG mix)
        "cfg_step_latents": cap_a["step_latents"][:, 0],          # [10,4,8,8] latents after each step
        "cfg_final_latents": cap_a["step_latents"][-1],           # [1,4,8,8] before /0.18215 + decode
        "cfg_image": cap_a["image"],                              # [1,64,64,3] float in [0,1]
        # case (b), guidance 1.0
        "cfg1_unet_out_step0": cap_b["unet_out"],                 # [1,4,8,8]
        "cfg1_step_latents": cap_b["step_latents"][:, 0],         # [10,4,8,8]
        "cfg1_final_latents": cap_b["step_latents"][-1],          # [1,4,8,8]
        "cfg1_image": cap_b["image"],                             # [1,64,64,3]
    }
    debug = {k: v.detach().clone().contiguous() for k, v in debug.items()}
    save_file(debug, str(OUT_DIR / "debug.safetensors"))

    # Precision hint: the same two cases in float64 (the weights are exactly representable).
    f64 = f64_check(noise, img_a, img_b)

    def trim(ids):
        return [int(x) for x in ids[0].tolist()]

    case = {
        "description": "Tiny random-weight SD-1.5-architecture pipeline, diffusers reference output",
        "model_dir": "tiny-sd15",
        "prompt": PROMPT,
        "negative_prompt": NEGATIVE_PROMPT,
        "steps": STEPS,
        "guidance_scale": GUIDANCE,
        "width": WIDTH,
        "height": HEIGHT,
        "sampler": "ddim",
        "eta": 0.0,
        "noise": "noise.safetensors (tensor 'noise', f32 [1,4,8,8]); passed as latents=, "
                 "DDIM init_noise_sigma = 1 so it is used unscaled; no RNG is used during sampling",
        "seed_note": "seed-free: the image depends only on the weights and noise.safetensors; "
                     f"(they were drawn from torch seeds weights={WEIGHT_SEED}, noise={NOISE_SEED})",
        "expected": "expected.png",
        "extra_cases": [
            {"expected": "expected_cfg1.png", "guidance_scale": 1.0, "negative_prompt": None,
             "note": "guidance <= 1 disables CFG in diffusers: only the cond pass is run"},
        ],
        "png_quantisation": "uint8 = round(clamp(x/2+0.5, 0, 1) * 255)",
        "vae_scaling_factor": pipe.vae.config.scaling_factor,
        "vae_scale_factor": pipe.vae_scale_factor,
        "timesteps": timesteps,
        "prompt_ids": trim(ids_prompt),
        "negative_prompt_ids": trim(ids_neg),
        "empty_prompt_ids": trim(ids_empty),
        "tokenizer": {
            "class": type(tok).__name__,
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id,
            "unk_token_id": tok.unk_token_id,
            "model_max_length": tok.model_max_length,
            "vocab_size": len(tok),
            "prompt_tokens": tok.convert_ids_to_tokens(trim(ids_prompt))[:12],
            "negative_prompt_tokens": tok.convert_ids_to_tokens(trim(ids_neg))[:6],
        },
        "attention": "unet/vae use diffusers AttnProcessor2_0 (torch SDPA), all float32 on CPU",
        "float64_vs_float32": f64,
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "transformers": transformers.__version__,
            "numpy": np.__version__,
        },
    }
    with open(OUT_DIR / "case.json", "w") as f:
        json.dump(case, f, indent=2)
        f.write("\n")

    # ---- report ----
    print("timesteps:", timesteps)
    print("prompt ids:", trim(ids_prompt))
    print("prompt tokens:", tok.convert_ids_to_tokens(trim(ids_prompt))[:12])
    print("negative ids:", trim(ids_neg))
    print("negative tokens:", tok.convert_ids_to_tokens(trim(ids_neg))[:6])
    print("bos/eos/pad/unk:", tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id)
    for name, img in (("expected", img_a), ("expected_cfg1", img_b)):
        x = img[0]
        print(f"{name}: min {x.min():.4f} max {x.max():.4f} mean {x.mean():.4f} std {x.std():.4f} "
              f"clipped0 {(x <= 0).mean():.3f} clipped1 {(x >= 1).mean():.3f}")
    print("float64 vs float32:", f64)
    print("|img_a - img_b| mean:", float(np.abs(img_a - img_b).mean()))
    print("cond vs uncond embeds max diff:", float((emb_prompt - emb_neg).abs().max()))
    print("final latents (cfg) std:", float(cap_a["step_latents"][-1].std()))
    total = 0
    for p in sorted(OUT_DIR.rglob("*")):
        if p.is_file():
            s = p.stat().st_size
            total += s
            print(f"{s:>10}  {p.relative_to(REPO_ROOT)}")
    print(f"{total:>10}  TOTAL")


if __name__ == "__main__":
    main()
