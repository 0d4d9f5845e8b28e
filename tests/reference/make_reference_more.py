#!/usr/bin/env python3
"""More diffusers reference cases for Atelier's Rust tests (samplers, img2img, SD2-v, SDXL).

Run AFTER make_reference.py (it loads tests/fixtures/reference/tiny-sd15 from disk and
reuses noise.safetensors).  It never writes any file that make_reference.py writes.

    /root/refenv/bin/python tests/reference/make_reference_more.py     # from the repo root

What it writes (under tests/fixtures/reference/)
-----------------------------------------------
    tiny-sd2v/                 tiny SD-2.x-style v-prediction pipeline (diffusers folder)
    tiny-sdxl/                 tiny SDXL-style pipeline (diffusers folder, two text encoders)
    noise_48x64.safetensors    {"noise": f32 [1,4,8,6]}   DDIM 48x64 case
    noise_sd2v.safetensors     {"noise": f32 [1,4,8,8]}   SD2-v case
    noise_sdxl.safetensors     {"noise": f32 [1,4,8,8]}   SDXL 64x64 cases
    noise_sdxl_48x64.safetensors {"noise": f32 [1,4,8,6]} SDXL 48x64 case
    init_checker.png           64x64 RGB checkerboard, the img2img init image
    expected_*.png             one per case, see cases_more.json
    debug_more.safetensors     small intermediate tensors for the tiny-sd15 / sd2v cases
    debug_sdxl.safetensors     SDXL intermediates (embeddings, add_time_ids, first UNet output, ...)
    cases_more.json            every case: settings, timesteps/sigmas, scheduler config, ...

Every weight / noise tensor comes from its own torch.Generator with a fixed seed, so the
existing fixture files are untouched and the output is bit-for-bit reproducible.
"""

import hashlib
import inspect
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_reference as base  # noqa: E402  (reinit_, to_png, tokens, constants)

import diffusers  # noqa: E402
import transformers  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
    UniPCMultistepScheduler,
)
from diffusers.pipelines.stable_diffusion import pipeline_stable_diffusion_img2img as img2img_mod  # noqa: E402
from transformers import (  # noqa: E402
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
)

REPO_ROOT = base.REPO_ROOT
OUT_DIR = base.OUT_DIR
SD15_DIR = base.MODEL_DIR
SD2V_DIR = OUT_DIR / "tiny-sd2v"
SDXL_DIR = OUT_DIR / "tiny-sdxl"

PROMPT = base.PROMPT            # "a red cat sitting on a blue mat"
NEGATIVE_PROMPT = base.NEGATIVE_PROMPT  # "blurry"

# New, independent seeds (the ones in make_reference.py are 1234 / 42).
SD2V_WEIGHT_SEED = 2345
SDXL_WEIGHT_SEED = 3456
NOISE_48x64_SEED = 4801
NOISE_SD2V_SEED = 4802
NOISE_SDXL_SEED = 4803
NOISE_SDXL_48x64_SEED = 4804

# Keys the real stabilityai/stable-diffusion-xl-base-1.0 scheduler_config.json carries
# although EulerDiscreteScheduler does not take them.  DDIMScheduler.from_config() picks
# them up; without them DDIM would fall back to clip_sample=True, set_alpha_to_one=True.
SDXL_EXTRA_SCHEDULER_KEYS = {
    "clip_sample": False,
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
}


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def sched_json(s):
    d = json.loads(s.to_json_string())
    d.pop("_diffusers_version", None)
    return d


def ignored_keys(s):
    """Keys carried in s.config (from the config it was made from) that its class does not take."""
    params = set(inspect.signature(type(s).__init__).parameters)
    return sorted(k for k in sched_json(s) if not k.startswith("_") and k not in params)


def shape_str(t):
    dt = {torch.float32: "f32", torch.int64: "i64"}[t.dtype]
    return f"{dt} [{','.join(str(d) for d in t.shape)}]"


def finite(o):
    """Strict JSON: non-finite floats (e.g. DPM's lambda_min_clipped = -inf) become strings."""
    if isinstance(o, float) and not np.isfinite(o):
        return "inf" if o > 0 else ("-inf" if o < 0 else "nan")
    if isinstance(o, dict):
        return {k: finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [finite(v) for v in o]
    return o


def f32list(x):
    return [float(v) for v in torch.as_tensor(x).double().flatten().tolist()]


def intlist(x):
    return [int(v) for v in torch.as_tensor(x).flatten().tolist()]


def make_noise(seed, shape, name):
    n = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
    save_file({"noise": n.contiguous()}, str(OUT_DIR / name))
    return n


def load_noise(name):
    return load_file(str(OUT_DIR / name))["noise"]


class Capture:
    """First UNet call (inputs + output) and the latents after every step."""

    def __init__(self):
        self.first = None
        self.step_latents = []

    def hook(self, module, args, kwargs, output):
        if self.first is None:
            sample = args[0] if args else kwargs["sample"]
            t = args[1] if len(args) > 1 else kwargs["timestep"]
            out = output[0] if isinstance(output, tuple) else output.sample
            ehs = kwargs.get("encoder_hidden_states", args[2] if len(args) > 2 else None)
            ack = kwargs.get("added_cond_kwargs") or {}
            self.first = {
                "sample": sample.detach().clone(),
                "t": torch.as_tensor(t).detach().clone(),
                "out": out.detach().clone(),
                "ehs": ehs.detach().clone(),
                "text_embeds": ack["text_embeds"].detach().clone() if "text_embeds" in ack else None,
                "time_ids": ack["time_ids"].detach().clone() if "time_ids" in ack else None,
            }

    def on_step_end(self, p, i, t, cbk):
        self.step_latents.append(cbk["latents"].detach().clone())
        return cbk


def run_pipe(pipe, **kw):
    cap = Capture()
    h = pipe.unet.register_forward_hook(cap.hook, with_kwargs=True)
    try:
        with torch.no_grad():
            out = pipe(output_type="np", callback_on_step_end=cap.on_step_end,
                       callback_on_step_end_tensor_inputs=["latents"], **kw)
    finally:
        h.remove()
    return out.images, cap


class Float64:
    """Run a block in float64 (CLIP builds its causal mask in the default dtype)."""

    def __enter__(self):
        self.prev = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)

    def __exit__(self, *a):
        torch.set_default_dtype(self.prev)


def text_kwargs(pipe, dtype, negative_prompt):
    """float32: plain prompt strings.  float64: embeddings computed under Float64 (only CLIP needs
    the float64 default dtype; running whole schedulers under it breaks UniPC's linalg.solve)."""
    if dtype == torch.float32:
        return dict(prompt=PROMPT, negative_prompt=negative_prompt)
    with Float64(), torch.no_grad():
        if isinstance(pipe, StableDiffusionXLPipeline):
            pe, npe, pp, npp = pipe.encode_prompt(PROMPT, device=pipe.device, num_images_per_prompt=1,
                                                  do_classifier_free_guidance=True,
                                                  negative_prompt=negative_prompt)
            return dict(prompt_embeds=pe, negative_prompt_embeds=npe, pooled_prompt_embeds=pp,
                        negative_pooled_prompt_embeds=npp)
        pe, npe = pipe.encode_prompt(PROMPT, pipe.device, 1, True, negative_prompt)
        assert pe.dtype == torch.float64
        return dict(prompt_embeds=pe, negative_prompt_embeds=npe)


def precision(ref, x64):
    d = np.abs(ref.astype(np.float64) - x64)
    du8 = np.abs(np.round(ref.astype(np.float64) * 255) - np.round(x64 * 255))
    return {"image_max_abs": float(d.max()), "image_mean_abs": float(d.mean()),
            "u8_max_abs": int(du8.max()), "u8_pixels_differing": int((du8 > 0).sum())}


def img_stats(img):
    x = img[0]
    return (f"min {x.min():.4f} max {x.max():.4f} mean {x.mean():.4f} std {x.std():.4f} "
            f"clipped0 {(x <= 0).mean():.3f} clipped1 {(x >= 1).mean():.3f}")


def trim(ids):
    return [int(x) for x in ids[0].tolist()]


def tok_info(tok, text):
    ids = trim(base.tokens(tok, text))
    return ids


def load_sd15(dtype=torch.float32):
    pipe = StableDiffusionPipeline.from_pretrained(SD15_DIR, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(dtype)


def common_entry(name, model_dir, pipeline, sampler, noise_file, noise, expected, pipe, sched,
                 steps, guidance, width, height, negative_prompt, f64):
    return {
        "name": name,
        "model_dir": model_dir,
        "pipeline": pipeline,
        "mode": "txt2img",
        "prompt": PROMPT,
        "negative_prompt": negative_prompt,
        "steps": steps,
        "guidance_scale": guidance,
        "eta": 0.0,
        "width": width,
        "height": height,
        "sampler": sampler,
        "noise": noise_file,
        "noise_tensor": "noise",
        "noise_shape": list(noise.shape),
        "init_noise_sigma": float(sched.init_noise_sigma),
        "expected": expected,
        "timesteps": intlist(sched.timesteps),
        "sigmas": f32list(sched.sigmas) if hasattr(sched, "sigmas") and sched.__class__ is not DDIMScheduler else None,
        "scheduler_class": type(sched).__name__,
        "scheduler_config": sched_json(sched),
        "scheduler_config_ignored_keys": ignored_keys(sched),
        "prediction_type": sched.config.prediction_type,
        "vae_scaling_factor": float(pipe.vae.config.scaling_factor),
        "float64_vs_float32": f64,
        "img2img": None,
        "sdxl": None,
    }


# ---------------------------------------------------------------------------
# 1. tiny-sd15: DPM++ 2M Karras, UniPC, DDIM 48x64, img2img
# ---------------------------------------------------------------------------

def sd15_sampler_case(name, sampler, make_sched, steps, expected, noise_file, width, height, debug):
    noise = load_noise(noise_file)
    imgs = {}
    for dtype in (torch.float32, torch.float64):
        pipe = load_sd15(dtype)
        pipe.scheduler = make_sched(pipe.scheduler.config)
        img, cap = run_pipe(pipe, **text_kwargs(pipe, dtype, NEGATIVE_PROMPT), height=height,
                            width=width, num_inference_steps=steps, guidance_scale=base.GUIDANCE,
                            eta=0.0, latents=noise.clone().to(dtype))
        imgs[dtype] = img
        if dtype == torch.float32:
            sched, pipe32, cap32 = pipe.scheduler, pipe, cap
    base.to_png(imgs[torch.float32], OUT_DIR / expected)
    debug[f"{name}_unet_out_step0"] = cap32.first["out"]
    debug[f"{name}_final_latents"] = cap32.step_latents[-1]
    entry = common_entry(name, "tiny-sd15", "StableDiffusionPipeline", sampler, noise_file, noise,
                         expected, pipe32, sched, steps, base.GUIDANCE, width, height, NEGATIVE_PROMPT,
                         precision(imgs[torch.float32], imgs[torch.float64]))
    print(f"{name}: {img_stats(imgs[torch.float32])}")
    return entry


def checkerboard():
    y, x = np.mgrid[0:64, 0:64]
    red = ((x // 8 + y // 8) % 2) == 0
    img = np.empty((64, 64, 3), np.uint8)
    img[red] = (220, 40, 40)
    img[~red] = (30, 60, 200)
    return Image.fromarray(img)


def img2img_case(debug):
    steps, strength = 10, 0.5
    noise = load_noise("noise.safetensors")
    init_pil = checkerboard()
    init_pil.save(OUT_DIR / "init_checker.png")
    init_pil = Image.open(OUT_DIR / "init_checker.png").convert("RGB")  # what the Rust side reads

    results = {}
    for dtype in (torch.float32, torch.float64):
        sd = load_sd15(dtype)
        pipe = StableDiffusionImg2ImgPipeline(**sd.components, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        # [0,255] -> [0,1] -> [-1,1], NCHW (what diffusers' VaeImageProcessor does)
        x = pipe.image_processor.preprocess(init_pil).to(dtype)
        with torch.no_grad():
            init_latents = pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor

        # The pipeline skips VAE encoding for 4-channel `image` and draws the img2img
        # noise with randn_tensor(); patch it to return noise.safetensors.
        drawn = []

        def fixed_randn(shape, generator=None, device=None, dtype=None, layout=None):
            assert tuple(shape) == tuple(noise.shape), shape
            drawn.append(tuple(shape))
            return noise.clone().to(device=device, dtype=dtype)

        orig = img2img_mod.randn_tensor
        img2img_mod.randn_tensor = fixed_randn
        try:
            img, cap = run_pipe(pipe, **text_kwargs(pipe, dtype, NEGATIVE_PROMPT),
                                image=init_latents.clone(), strength=strength,
                                num_inference_steps=steps, guidance_scale=base.GUIDANCE, eta=0.0)
        finally:
            img2img_mod.randn_tensor = orig
        assert drawn == [tuple(noise.shape)], drawn
        results[dtype] = (img, cap, pipe, init_latents)

    img, cap, pipe, init_latents = results[torch.float32]
    sched = pipe.scheduler
    all_ts = intlist(sched.timesteps)
    t_start = steps - min(int(steps * strength), steps)
    run_ts = all_ts[t_start:]
    assert int(cap.first["t"]) == run_ts[0], (cap.first["t"], run_ts)
    assert len(cap.step_latents) == len(run_ts)

    # Cross-check: the same thing by hand with the components.
    with torch.no_grad():
        t0 = torch.tensor([run_ts[0]])
        lat = sched.add_noise(init_latents, noise, t0)
        ac = sched.alphas_cumprod[run_ts[0]]
        lat2 = ac.sqrt() * init_latents + (1 - ac).sqrt() * noise
        assert torch.allclose(lat, lat2, atol=1e-6)
        start_latents = lat.clone()
        cond = pipe.text_encoder(base.tokens(pipe.tokenizer, PROMPT))[0]
        unc = pipe.text_encoder(base.tokens(pipe.tokenizer, NEGATIVE_PROMPT))[0]
        ehs = torch.cat([unc, cond])
        man = DDIMScheduler.from_config(sched.config)
        man.set_timesteps(steps)
        for t in man.timesteps[t_start:]:
            e = pipe.unet(torch.cat([lat] * 2), t, encoder_hidden_states=ehs).sample
            eu, ec = e.chunk(2)
            e = eu + base.GUIDANCE * (ec - eu)
            lat = man.step(e, t, lat, eta=0.0).prev_sample
        manual_diff = float((lat - cap.step_latents[-1]).abs().max())
        assert torch.allclose(cap.first["sample"][:1], start_latents, atol=1e-6)
    print(f"img2img: manual loop vs pipeline final latents max diff {manual_diff:.3g}")

    base.to_png(img, OUT_DIR / "expected_img2img.png")
    debug["img2img_init_latents"] = init_latents            # mean * 0.18215
    debug["img2img_start_latents"] = start_latents          # after add_noise at t=401
    debug["img2img_unet_out_step0"] = cap.first["out"]
    debug["img2img_final_latents"] = cap.step_latents[-1]

    entry = common_entry("img2img", "tiny-sd15", "StableDiffusionImg2ImgPipeline", "ddim",
                         "noise.safetensors", noise, "expected_img2img.png", pipe, sched, steps,
                         base.GUIDANCE, 64, 64, NEGATIVE_PROMPT,
                         precision(img, results[torch.float64][0]))
    entry["mode"] = "img2img"
    entry["timesteps"] = run_ts
    entry["img2img"] = {
        "init_image": "init_checker.png",
        "init_image_desc": "64x64 RGB, 8px squares, (220,40,40) red where (x//8 + y//8) is even "
                           "(so red at (0,0)), else (30,60,200) blue",
        "strength": strength,
        "full_schedule_timesteps": all_ts,
        "t_start_index": t_start,
        "timesteps_run": run_ts,
        "init_image_preprocess": "x/255*2-1, NCHW float32, no resize (64 is a multiple of 8)",
        "init_latent": "mean",
        "init_latent_formula": "vae.encode(x).latent_dist.mean * vae.config.scaling_factor "
                               "(mean = first 4 channels of quant_conv(encoder(x))); no sampling",
        "noise": "noise.safetensors used as the img2img noise (diffusers' randn_tensor was patched "
                 "to return it)",
        "start_latents_formula": "sqrt(alphas_cumprod[t0]) * init_latents + "
                                 "sqrt(1 - alphas_cumprod[t0]) * noise, t0 = timesteps_run[0]",
        "alphas_cumprod_t0": float(sched.alphas_cumprod[run_ts[0]]),
        "manual_loop_vs_pipeline_max_abs": manual_diff,
        "debug_keys": ["img2img_init_latents", "img2img_start_latents", "img2img_unet_out_step0",
                       "img2img_final_latents"],
    }
    print(f"img2img: {img_stats(img)}")
    return entry


# ---------------------------------------------------------------------------
# 2. tiny-sd2v: SD 2.x-style v-prediction model
# ---------------------------------------------------------------------------

def load_base_tokenizer(**kw):
    return CLIPTokenizer.from_pretrained(SD15_DIR / "tokenizer", **kw)


def build_sd2v():
    tokenizer = load_base_tokenizer(pad_token="!")
    assert tokenizer.pad_token_id == 0
    gen = torch.Generator().manual_seed(SD2V_WEIGHT_SEED)
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5,
        projection_dim=32, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, torch_dtype="float32",
    )
    text_encoder = CLIPTextModel(text_config).eval()
    base.reinit_(text_encoder, gen, gain=1.0, emb_std=0.5)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=(2, 4), norm_num_groups=8,
        use_linear_projection=True, upcast_attention=True,
    ).eval()
    base.reinit_(unet, gen, gain=1.0)
    vae = AutoencoderKL(
        block_out_channels=(8, 8, 16, 16), in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4, layers_per_block=1, norm_num_groups=4, sample_size=64,
    ).eval()
    base.reinit_(vae, gen, gain=1.0)
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction",
        timestep_spacing="leading",
    )
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(SD2V_DIR, safe_serialization=True)


def sd2v_case(debug):
    steps, noise_file = 10, "noise_sd2v.safetensors"
    noise = load_noise(noise_file)
    imgs = {}
    for dtype in (torch.float32, torch.float64):
        pipe = StableDiffusionPipeline.from_pretrained(SD2V_DIR, safety_checker=None,
                                                       requires_safety_checker=False).to(dtype)
        pipe.set_progress_bar_config(disable=True)
        img, cap = run_pipe(pipe, **text_kwargs(pipe, dtype, NEGATIVE_PROMPT), height=64,
                            width=64, num_inference_steps=steps, guidance_scale=base.GUIDANCE,
                            eta=0.0, latents=noise.clone().to(dtype))
        imgs[dtype] = img
        if dtype == torch.float32:
            pipe32, cap32 = pipe, cap
    base.to_png(imgs[torch.float32], OUT_DIR / "expected_sd2v.png")
    tok = pipe32.tokenizer
    ids_p, ids_n = base.tokens(tok, PROMPT), base.tokens(tok, NEGATIVE_PROMPT)
    with torch.no_grad():
        debug["sd2v_cond_embeds"] = pipe32.text_encoder(ids_p)[0]
        debug["sd2v_uncond_embeds"] = pipe32.text_encoder(ids_n)[0]
    assert torch.allclose(cap32.first["ehs"], torch.cat([debug["sd2v_uncond_embeds"],
                                                         debug["sd2v_cond_embeds"]]))
    debug["sd2v_prompt_ids"] = ids_p.to(torch.int64)
    debug["sd2v_negative_ids"] = ids_n.to(torch.int64)
    debug["sd2v_unet_out_step0"] = cap32.first["out"]
    debug["sd2v_final_latents"] = cap32.step_latents[-1]
    entry = common_entry("sd2v", "tiny-sd2v", "StableDiffusionPipeline", "ddim", noise_file, noise,
                         "expected_sd2v.png", pipe32, pipe32.scheduler, steps, base.GUIDANCE, 64, 64,
                         NEGATIVE_PROMPT, precision(imgs[torch.float32], imgs[torch.float64]))
    entry["tokens"] = {
        "pad_token": tok.pad_token, "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
        "prompt_ids": trim(ids_p), "negative_prompt_ids": trim(ids_n),
    }
    entry["notes"] = ("v-prediction: the UNet output is v; DDIM uses x0 = sqrt(a)*x - sqrt(1-a)*v, "
                      "eps = sqrt(a)*v + sqrt(1-a)*x. CFG is applied to v. Text embeddings are "
                      "last_hidden_state (after final_layer_norm), as for SD 1.5. UNet uses linear "
                      "proj_in/proj_out and per-block attention_head_dim (2,4) = number of heads.")
    print(f"sd2v: {img_stats(imgs[torch.float32])}")
    return entry


# ---------------------------------------------------------------------------
# 3. tiny-sdxl
# ---------------------------------------------------------------------------

def build_sdxl():
    tokenizer = load_base_tokenizer()              # pads with <|endoftext|> like SDXL's tokenizer
    tokenizer_2 = load_base_tokenizer(pad_token="!")  # pads with "!" like SDXL's tokenizer_2
    gen = torch.Generator().manual_seed(SDXL_WEIGHT_SEED)

    def tcfg(layers, act, proj, pad_id):
        return CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=layers,
            num_attention_heads=4, max_position_embeddings=77, hidden_act=act, layer_norm_eps=1e-5,
            projection_dim=proj, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=pad_id, torch_dtype="float32",
        )

    text_encoder = CLIPTextModel(tcfg(2, "quick_gelu", 32, tokenizer.pad_token_id)).eval()
    base.reinit_(text_encoder, gen, gain=1.0, emb_std=0.5)
    text_encoder_2 = CLIPTextModelWithProjection(tcfg(3, "gelu", 32, tokenizer_2.pad_token_id)).eval()
    base.reinit_(text_encoder_2, gen, gain=1.0, emb_std=0.5)

    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2), attention_head_dim=(2, 4), cross_attention_dim=64,
        norm_num_groups=8, use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=32 + 6 * 8,
    ).eval()
    base.reinit_(unet, gen, gain=1.0)
    vae = AutoencoderKL(
        block_out_channels=(8, 8, 16, 16), in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4, layers_per_block=1, norm_num_groups=4, sample_size=64,
        scaling_factor=0.13025, force_upcast=True,
    ).eval()
    base.reinit_(vae, gen, gain=1.0)
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        prediction_type="epsilon", steps_offset=1, timestep_spacing="leading",
        interpolation_type="linear", use_karras_sigmas=False,
    )
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler, force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    pipe.save_pretrained(SDXL_DIR, safe_serialization=True)
    # Mirror the real SDXL scheduler_config.json (extra DDIM/PNDM keys), see SDXL_EXTRA_SCHEDULER_KEYS.
    p = SDXL_DIR / "scheduler" / "scheduler_config.json"
    cfg = json.loads(p.read_text())
    cfg.update(SDXL_EXTRA_SCHEDULER_KEYS)
    p.write_text(json.dumps(dict(sorted(cfg.items(), key=lambda kv: (not kv[0].startswith("_"), kv[0]))),
                            indent=2) + "\n")


def load_sdxl(dtype):
    pipe = StableDiffusionXLPipeline.from_pretrained(SDXL_DIR, add_watermarker=False).to(dtype)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    c = pipe.scheduler.config
    assert c.clip_sample is False and c.set_alpha_to_one is False and c.steps_offset == 1, dict(c)
    return pipe


def sdxl_case(name, negative_prompt, noise_file, expected, width, height, debug, dbg_prefix):
    steps, guidance = 10, 5.0
    noise = load_noise(noise_file)
    imgs = {}
    for dtype in (torch.float32, torch.float64):
        pipe = load_sdxl(dtype)
        img, cap = run_pipe(pipe, **text_kwargs(pipe, dtype, negative_prompt), height=height,
                            width=width, num_inference_steps=steps, guidance_scale=guidance,
                            eta=0.0, latents=noise.clone().to(dtype))
        imgs[dtype] = img
        if dtype == torch.float32:
            pipe32, cap32 = pipe, cap
    base.to_png(imgs[torch.float32], OUT_DIR / expected)
    f = cap32.first
    neg_embeds, pos_embeds = f["ehs"].chunk(2)
    neg_pooled, pos_pooled = f["text_embeds"].chunk(2)
    if dbg_prefix == "":
        debug["prompt_embeds"] = pos_embeds                      # [1,77,64]
        debug["pooled_prompt_embeds"] = pos_pooled               # [1,32]
        debug["negative_prompt_embeds"] = neg_embeds             # [1,77,64]  ("blurry")
        debug["negative_pooled_prompt_embeds"] = neg_pooled      # [1,32]
        debug["add_time_ids"] = f["time_ids"]                    # [2,6] rows (neg, pos)
    if dbg_prefix is not None:
        debug[f"{dbg_prefix}unet_in_step0"] = f["sample"]                # [2,4,h,w]
        debug[f"{dbg_prefix}unet_out_step0"] = f["out"]                  # [2,4,h,w]
        debug[f"{dbg_prefix}final_latents"] = cap32.step_latents[-1]     # [1,4,h,w]
    sched = pipe32.scheduler
    entry = common_entry(name, "tiny-sdxl", "StableDiffusionXLPipeline", "ddim", noise_file, noise,
                         expected, pipe32, sched, steps, guidance, width, height, negative_prompt,
                         precision(imgs[torch.float32], imgs[torch.float64]))
    zero_neg = negative_prompt is None
    assert zero_neg == bool((neg_embeds == 0).all() and (neg_pooled == 0).all())
    entry["sdxl"] = {
        "original_size": [height, width],
        "crops_coords_top_left": [0, 0],
        "target_size": [height, width],
        "add_time_ids": [float(v) for v in f["time_ids"][1].tolist()],
        "negative_add_time_ids": [float(v) for v in f["time_ids"][0].tolist()],
        "add_time_ids_order": "original_size (h, w) + crops_coords_top_left (top, left) + target_size (h, w)",
        "negative_embeddings": "zeros" if zero_neg else "encoded",
        "force_zeros_for_empty_prompt": bool(pipe32.config.force_zeros_for_empty_prompt),
        "saved_scheduler_class": "EulerDiscreteScheduler",
        "note": ("generated with DDIMScheduler.from_config(saved Euler config); scheduler_config below "
                 "is that DDIM config"),
    }
    print(f"{name}: {img_stats(imgs[torch.float32])}")
    return entry


def sdxl_tokens_and_encoders(debug):
    pipe = load_sdxl(torch.float32)
    t1, t2 = pipe.tokenizer, pipe.tokenizer_2
    out = {}
    for label, text in (("prompt", PROMPT), ("negative_prompt", NEGATIVE_PROMPT), ("empty", "")):
        i1, i2 = base.tokens(t1, text), base.tokens(t2, text)
        out[f"{label}_ids_tokenizer"] = trim(i1)
        out[f"{label}_ids_tokenizer_2"] = trim(i2)
        out[f"{label}_eos_index"] = int((i2[0] == t2.eos_token_id).nonzero()[0])
        if label == "prompt":
            debug["prompt_ids_tokenizer"] = i1.to(torch.int64)
            debug["prompt_ids_tokenizer_2"] = i2.to(torch.int64)
            with torch.no_grad():
                o1 = pipe.text_encoder(i1, output_hidden_states=True)
                o2 = pipe.text_encoder_2(i2, output_hidden_states=True)
            debug["te1_hidden_states_m2"] = o1.hidden_states[-2]        # [1,77,32]
            debug["te2_hidden_states_m2"] = o2.hidden_states[-2]        # [1,77,32]
            debug["te2_text_embeds"] = o2.text_embeds                   # [1,32] pooled+projection
            # pooled = text_projection(final_layer_norm(last)[eos index]); eos = first 545
            eos = out["prompt_eos_index"]
            manual = pipe.text_encoder_2.text_projection(o2.last_hidden_state[:, eos])
            assert torch.allclose(manual, o2.text_embeds, atol=1e-6)
    out.update({
        "tokenizer": {"pad_token": t1.pad_token, "pad_token_id": t1.pad_token_id,
                      "bos_token_id": t1.bos_token_id, "eos_token_id": t1.eos_token_id},
        "tokenizer_2": {"pad_token": t2.pad_token, "pad_token_id": t2.pad_token_id,
                        "bos_token_id": t2.bos_token_id, "eos_token_id": t2.eos_token_id},
        "text_encoder_eos_token_id": pipe.text_encoder.config.eos_token_id,
        "text_encoder_2_eos_token_id": pipe.text_encoder_2.config.eos_token_id,
        "prompt_embeds_rule": "concat(te1.hidden_states[-2], te2.hidden_states[-2]) on the last dim "
                              "(penultimate layer output, NO final_layer_norm) -> [1,77,64]",
        "pooled_rule": "te2 text_embeds = text_projection(final_layer_norm(last layer)[first eos "
                       "position]) (Linear 32->32, no bias)",
    })
    return out


# ---------------------------------------------------------------------------


def sha_all():
    return {str(p.relative_to(OUT_DIR)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(OUT_DIR.rglob("*")) if p.is_file()}


def main():
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    assert (SD15_DIR / "model_index.json").exists(), "run make_reference.py first"

    protected = ["noise.safetensors", "expected.png", "expected_cfg1.png", "case.json",
                 "debug.safetensors"]
    before = sha_all()
    before = {k: v for k, v in before.items() if k.startswith("tiny-sd15/") or k in protected}

    make_noise(NOISE_48x64_SEED, (1, 4, 8, 6), "noise_48x64.safetensors")
    make_noise(NOISE_SD2V_SEED, (1, 4, 8, 8), "noise_sd2v.safetensors")
    make_noise(NOISE_SDXL_SEED, (1, 4, 8, 8), "noise_sdxl.safetensors")
    make_noise(NOISE_SDXL_48x64_SEED, (1, 4, 8, 6), "noise_sdxl_48x64.safetensors")
    build_sd2v()
    build_sdxl()

    debug, debug_xl = {}, {}
    cases = []
    cases.append(sd15_sampler_case(
        "dpmpp2mk", "dpmpp-2m-karras",
        lambda c: DPMSolverMultistepScheduler.from_config(c, use_karras_sigmas=True,
                                                          algorithm_type="dpmsolver++", solver_order=2),
        12, "expected_dpmpp2mk.png", "noise.safetensors", 64, 64, debug))
    cases.append(sd15_sampler_case(
        "unipc", "unipc", lambda c: UniPCMultistepScheduler.from_config(c),
        12, "expected_unipc.png", "noise.safetensors", 64, 64, debug))
    cases.append(sd15_sampler_case(
        "ddim_48x64", "ddim", lambda c: DDIMScheduler.from_config(c),
        10, "expected_ddim_48x64.png", "noise_48x64.safetensors", 48, 64, debug))
    cases.append(img2img_case(debug))
    cases.append(sd2v_case(debug))
    sdxl_tokens = sdxl_tokens_and_encoders(debug_xl)
    cases.append(sdxl_case("sdxl", NEGATIVE_PROMPT, "noise_sdxl.safetensors", "expected_sdxl.png",
                           64, 64, debug_xl, ""))
    cases.append(sdxl_case("sdxl_noneg", None, "noise_sdxl.safetensors", "expected_sdxl_noneg.png",
                           64, 64, debug_xl, "noneg_"))
    cases.append(sdxl_case("sdxl_emptyneg", "", "noise_sdxl.safetensors", "expected_sdxl_emptyneg.png",
                           64, 64, debug_xl, None))
    cases.append(sdxl_case("sdxl_48x64", NEGATIVE_PROMPT, "noise_sdxl_48x64.safetensors",
                           "expected_sdxl_48x64.png", 48, 64, debug_xl, None))
    for c in cases:
        if c["sdxl"] is not None:
            c["sdxl"]["tokens"] = "see top-level sdxl_tokens"
    cases[-3]["notes"] = ("negative_prompt None (no negative prompt): with force_zeros_for_empty_prompt "
                          "diffusers uses all-zero negative prompt_embeds AND zero negative pooled embeds "
                          "(no text encoder pass); CFG still runs with guidance 5.0")
    cases[-2]["notes"] = ("negative_prompt \"\" (empty string): diffusers does NOT zero it (only None "
                          "triggers zeros); it encodes \"\" with both encoders. Same noise as 'sdxl'.")
    cases[-1]["notes"] = ("non-square SDXL: latents [1,4,8,6]; add_time_ids are (h, w) ordered: "
                          "[64, 48, 0, 0, 64, 48]")

    debug = {k: v.detach().clone().contiguous().float() if v.is_floating_point() else v.contiguous()
             for k, v in debug.items()}
    debug_xl = {k: v.detach().clone().contiguous().float() if v.is_floating_point() else v.contiguous()
                for k, v in debug_xl.items()}
    save_file(debug, str(OUT_DIR / "debug_more.safetensors"))
    save_file(debug_xl, str(OUT_DIR / "debug_sdxl.safetensors"))

    doc = {
        "description": "More diffusers reference cases (samplers, non-square, img2img, SD2-v, SDXL) "
                       "for tiny random-weight models; generated by tests/reference/make_reference_more.py",
        "png_quantisation": "uint8 = round(clamp(x/2+0.5, 0, 1) * 255)",
        "noise_usage": "txt2img: noise is passed as latents= and multiplied by init_noise_sigma (1.0 for "
                       "every scheduler used here); img2img: see the case's img2img block. No RNG is "
                       "used during sampling (eta 0; DPM++ 2M and UniPC are deterministic).",
        "cfg": "batch order [uncond, cond]; eps = eps_u + g * (eps_c - eps_u); guidance_rescale 0",
        "json_note": "non-finite floats in scheduler configs are written as strings (\"-inf\")",
        "seeds": {"sd2v_weights": SD2V_WEIGHT_SEED, "sdxl_weights": SDXL_WEIGHT_SEED,
                  "noise_48x64": NOISE_48x64_SEED, "noise_sd2v": NOISE_SD2V_SEED,
                  "noise_sdxl": NOISE_SDXL_SEED, "noise_sdxl_48x64": NOISE_SDXL_48x64_SEED},
        "cases": cases,
        "sdxl_tokens": sdxl_tokens,
        "debug_files": {
            "debug_more.safetensors": {k: shape_str(v) for k, v in debug.items()},
            "debug_sdxl.safetensors": {k: shape_str(v) for k, v in debug_xl.items()},
        },
        "versions": {
            "python": sys.version.split()[0], "torch": torch.__version__,
            "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "numpy": np.__version__,
        },
    }
    with open(OUT_DIR / "cases_more.json", "w") as f:
        json.dump(finite(doc), f, indent=2, allow_nan=False)
        f.write("\n")

    after = sha_all()
    for k, v in before.items():
        assert after.get(k) == v, f"existing fixture file changed: {k}"

    # ---- report ----
    for c in cases:
        print(f"{c['name']:>14}: {c['scheduler_class']:<28} steps {c['steps']} ts {c['timesteps']}")
        if c["sigmas"] is not None:
            print(f"{'':>16}sigmas {[round(s, 4) for s in c['sigmas']]}")
        print(f"{'':>16}f64: {c['float64_vs_float32']}")
    print("sdxl tokens:", json.dumps({k: (v[:12] if isinstance(v, list) else v)
                                      for k, v in sdxl_tokens.items()}))
    total = 0
    for p in sorted(OUT_DIR.rglob("*")):
        if p.is_file():
            s = p.stat().st_size
            total += s
            print(f"{s:>10}  {p.relative_to(REPO_ROOT)}")
    print(f"{total:>10}  TOTAL")


if __name__ == "__main__":
    main()
