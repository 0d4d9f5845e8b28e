"""diffusers reference cases for AUTOMATIC1111 prompt semantics and clip skip.

diffusers has no A1111 prompt syntax, so this script implements A1111's rules in Python (the
attention parser, 75-token chunks with comma backtracking, BREAK, "Original" emphasis, the
SDXL pooled embedding from the first chunk) with the tiny models' own tokenizers and text
encoders, and feeds the result to diffusers as `prompt_embeds`. Clip skip uses diffusers' own
`clip_skip` (diffusers' `clip_skip=1` is A1111's "Clip skip: 2").

A prompt and a negative prompt of different chunk counts cannot go through the pipeline (it
concatenates them), so those cases run a hand-written DDIM loop with one UNet pass per side,
as A1111 does when the lengths differ.

Runs after make_reference.py / make_reference_more.py (it loads `tiny-sd15/`, `tiny-sdxl/` and
their noise) and writes only:

    expected_prompt_*.png   one per case
    cases_prompts.json      every case: settings, chunk counts, token counts

    /root/refenv/bin/python tests/reference/make_reference_prompts.py   # from the repo root
"""

import json
import re
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_reference as base  # noqa: E402
import make_reference_more as more  # noqa: E402
from diffusers import (  # noqa: E402
    DDIMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
)

OUT_DIR = base.OUT_DIR
STEPS = 10

# --- A1111's rules, written from its documented behaviour -----------------------------------

RE_ATTENTION = re.compile(r"""
\\\(|\\\)|\\\[|\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|]|[^\\()\[\]:]+|:
""", re.X)
RE_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse_prompt_attention(text):
    res, round_brackets, square_brackets = [], [], []

    def multiply_range(start, m):
        for p in range(start, len(res)):
            res[p][1] *= m

    for m in RE_ATTENTION.finditer(text):
        t, weight = m.group(0), m.group(1)
        if t.startswith("\\"):
            res.append([t[1:], 1.0])
        elif t == "(":
            round_brackets.append(len(res))
        elif t == "[":
            square_brackets.append(len(res))
        elif weight is not None and round_brackets:
            multiply_range(round_brackets.pop(), float(weight))
        elif t == ")" and round_brackets:
            multiply_range(round_brackets.pop(), 1.1)
        elif t == "]" and square_brackets:
            multiply_range(square_brackets.pop(), 1 / 1.1)
        else:
            for i, part in enumerate(re.split(RE_BREAK, t)):
                if i > 0:
                    res.append(["BREAK", -1])
                res.append([part, 1.0])
    for pos in round_brackets:
        multiply_range(pos, 1.1)
    for pos in square_brackets:
        multiply_range(pos, 1 / 1.1)
    if not res:
        res = [["", 1.0]]
    i = 0
    while i + 1 < len(res):
        if res[i][1] == res[i + 1][1]:
            res[i][0] += res[i + 1][0]
            res.pop(i + 1)
        else:
            i += 1
    return res


def chunk_prompt(tok, text, chunk_length=75, backtrack=20):
    """[(ids [77], multipliers [77])] as A1111 lays them out."""
    parsed = parse_prompt_attention(text)
    tokenized = tok([t for t, _ in parsed], truncation=False, add_special_tokens=False)["input_ids"]
    comma = tok.get_vocab().get(",</w>")
    bos, eos = tok.bos_token_id, tok.eos_token_id
    pad = tok.pad_token_id
    chunks, cur, mults = [], [], []
    last_comma = -1

    def next_chunk():
        nonlocal cur, mults, last_comma
        to_add = chunk_length - len(cur)
        ids = [bos] + cur + [eos] + [pad] * to_add
        ws = [1.0] + mults + [1.0] + [1.0] * to_add
        chunks.append((ids, ws))
        cur, mults, last_comma = [], [], -1

    for tokens, (t, weight) in zip(tokenized, parsed):
        if t == "BREAK" and weight == -1:
            next_chunk()
            continue
        for token in tokens:
            if token == comma:
                last_comma = len(cur)
            elif (len(cur) == chunk_length and last_comma != -1
                  and len(cur) - last_comma <= backtrack):
                at = last_comma + 1
                reloc, reloc_m = cur[at:], mults[at:]
                cur, mults = cur[:at], mults[:at]
                next_chunk()
                cur, mults = reloc, reloc_m
            if len(cur) == chunk_length:
                next_chunk()
            cur.append(token)
            mults.append(weight)
    if cur or not chunks:
        next_chunk()
    return chunks


def emphasis(z, ws):
    """"Original": z × weight per token, then rescaled to the chunk's mean before."""
    before = z.mean()
    z = z * torch.tensor(ws, dtype=z.dtype).reshape(1, -1, 1)
    return z * (before / z.mean())


def encode_sd(pipe, text, clip_skip=None):
    """[1, 77 × chunks, D] for an SD 1.x/2.x pipeline."""
    zs = []
    for ids, ws in chunk_prompt(pipe.tokenizer, text):
        out = pipe.text_encoder(torch.tensor([ids]), output_hidden_states=True)
        if clip_skip is None:
            z = out.last_hidden_state
        else:  # diffusers' clip_skip: hidden_states[-(clip_skip + 1)] then the final norm
            z = pipe.text_encoder.text_model.final_layer_norm(out.hidden_states[-(clip_skip + 1)])
        zs.append(emphasis(z, ws))
    return torch.cat(zs, dim=1)


def encode_sdxl(pipe, text):
    """(prompt_embeds [1, 77 × chunks, D1 + D2], pooled [1, P]) for SDXL."""
    per_side = []
    pooled = None
    for tok, enc in ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)):
        zs = []
        for i, (ids, ws) in enumerate(chunk_prompt(tok, text)):
            out = enc(torch.tensor([ids]), output_hidden_states=True)
            zs.append(emphasis(out.hidden_states[-2], ws))
            if enc is pipe.text_encoder_2 and i == 0:
                pooled = out.text_embeds
        per_side.append(torch.cat(zs, dim=1))
    return torch.cat(per_side, dim=-1), pooled


def manual_ddim_sd(pipe, cond, uncond, noise, guidance):
    """The pipeline's DDIM loop with one UNet pass per side (their lengths differ)."""
    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(STEPS)
    lat = noise.clone() * sched.init_noise_sigma
    for t in sched.timesteps:
        x = sched.scale_model_input(lat, t)
        u = pipe.unet(x, t, encoder_hidden_states=uncond).sample
        c = pipe.unet(x, t, encoder_hidden_states=cond).sample
        lat = sched.step(u + guidance * (c - u), t, lat, eta=0.0).prev_sample
    img = pipe.vae.decode(lat / pipe.vae.config.scaling_factor).sample
    return (img / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def load(cls, path):
    pipe = cls.from_pretrained(path, safety_checker=None, requires_safety_checker=False) \
        if cls is StableDiffusionPipeline else cls.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    return pipe


WEIGHTED = "a (red:1.4) cat [sitting] on a ((blue)) mat, \\(sunny\\)"
# Long enough for two chunks of 75 tokens (the tiny tokenizer spells most words out in
# pieces) and a BREAK for a third.
LONG = ("a red cat sitting on a blue mat, (watercolor:1.2), soft light, the sun in the window, "
        "a vase of flowers, an old clock on the wall, (dust:0.8), a cup of tea on the table, "
        "an open book BREAK [blurry background]")


def main():
    cases = []

    def record(name, model_dir, noise_file, img, prompt, negative, guidance, clip_skip=1,
               chunks=None, notes=""):
        expected = f"expected_prompt_{name}.png"
        base.to_png(img, OUT_DIR / expected)
        cases.append({
            "name": name, "model_dir": model_dir, "sampler": "ddim", "noise": noise_file,
            "expected": expected, "prompt": prompt, "negative_prompt": negative,
            "steps": STEPS, "guidance_scale": guidance, "width": 64, "height": 64,
            "clip_skip": clip_skip, "chunks": chunks, "notes": notes,
        })
        print(f"{name}: chunks {chunks}")

    with torch.no_grad():
        sd = load(StableDiffusionPipeline, base.MODEL_DIR)
        noise = more.load_noise("noise.safetensors")
        # Weights, nesting, a literal bracket; one chunk each side (pipeline).
        neg = "(blurry:1.3), [grainy]"
        pe, npe = encode_sd(sd, WEIGHTED), encode_sd(sd, neg)
        img = more.run_pipe(sd, prompt_embeds=pe, negative_prompt_embeds=npe, height=64,
                            width=64, num_inference_steps=STEPS, guidance_scale=7.5, eta=0.0,
                            latents=noise.clone())[0]
        record("weighted", "tiny-sd15", "noise.safetensors", img, WEIGHTED, neg, 7.5,
               chunks=[pe.shape[1] // 77, npe.shape[1] // 77])
        # Three chunks against one: two UNet passes.
        neg = "blurry"
        pe, npe = encode_sd(sd, LONG), encode_sd(sd, neg)
        img = manual_ddim_sd(sd, pe, npe, noise, 7.5)
        record("long", "tiny-sd15", "noise.safetensors", img, LONG, neg, 7.5,
               chunks=[pe.shape[1] // 77, npe.shape[1] // 77],
               notes="prompt and negative of different lengths: one UNet pass each")
        # Clip skip 2, plain prompt. diffusers' `clip_skip` applies to the prompt only; A1111
        # skips on both sides, so the negative is encoded here. The prompt's embedding is
        # diffusers' own, and checked against this script's.
        pe, _ = sd.encode_prompt(base.PROMPT, "cpu", 1, False, clip_skip=1)
        assert torch.allclose(pe, encode_sd(sd, base.PROMPT, clip_skip=1), atol=1e-6)
        npe = encode_sd(sd, base.NEGATIVE_PROMPT, clip_skip=1)
        img = more.run_pipe(sd, prompt_embeds=pe, negative_prompt_embeds=npe,
                            height=64, width=64, num_inference_steps=STEPS,
                            guidance_scale=7.5, eta=0.0, latents=noise.clone())[0]
        record("clip_skip2", "tiny-sd15", "noise.safetensors", img, base.PROMPT,
               base.NEGATIVE_PROMPT, 7.5, clip_skip=2, chunks=[1, 1],
               notes="clip skip on both sides, as A1111 (diffusers' clip_skip only skips on the prompt)")
        # Clip skip 2 with weights (the encoder's earlier layer, then emphasis).
        pe, npe = encode_sd(sd, WEIGHTED, clip_skip=1), encode_sd(sd, "(blurry:1.3)", clip_skip=1)
        img = more.run_pipe(sd, prompt_embeds=pe, negative_prompt_embeds=npe, height=64,
                            width=64, num_inference_steps=STEPS, guidance_scale=7.5, eta=0.0,
                            latents=noise.clone())[0]
        record("weighted_clip_skip2", "tiny-sd15", "noise.safetensors", img, WEIGHTED,
               "(blurry:1.3)", 7.5, clip_skip=2, chunks=[1, 1])

        # SDXL: two chunks on both sides (so the pipeline can take them), pooled from chunk 0.
        xl = load(StableDiffusionXLPipeline, more.SDXL_DIR)
        noise_xl = more.load_noise("noise_sdxl.safetensors")
        neg = "(blurry:1.2), " + "grainy, " * 14 + "dark"
        pe, pp = encode_sdxl(xl, LONG.replace(" BREAK", ","))
        npe, npp = encode_sdxl(xl, neg)
        assert pe.shape == npe.shape, (pe.shape, npe.shape)
        img = more.run_pipe(xl, prompt_embeds=pe, pooled_prompt_embeds=pp,
                            negative_prompt_embeds=npe, negative_pooled_prompt_embeds=npp,
                            height=64, width=64, num_inference_steps=STEPS, guidance_scale=5.0,
                            eta=0.0, latents=noise_xl.clone())[0]
        record("sdxl_long", "tiny-sdxl", "noise_sdxl.safetensors", img,
               LONG.replace(" BREAK", ","), neg, 5.0,
               chunks=[pe.shape[1] // 77, npe.shape[1] // 77])

    with open(OUT_DIR / "cases_prompts.json", "w") as f:
        json.dump({"diffusers": more.diffusers.__version__, "torch": torch.__version__,
                   "cases": cases}, f, indent=1)


if __name__ == "__main__":
    main()
