"""diffusers reference cases for the samplers added after the first fixtures: Euler
(EulerDiscreteScheduler), Heun (HeunDiscreteScheduler, two UNet evaluations per step but the
last), LCM (LCMScheduler) and DPM++ 2M SDE Karras (DPMSolverMultistepScheduler with
algorithm_type "sde-dpmsolver++" and Karras sigmas). Each scheduler is made with
`from_config(the model's scheduler config)`, as a diffusers user swapping schedulers does, so
the DDIM file's `timestep_spacing: "leading"` and `steps_offset: 1` apply to Euler and Heun,
while LCM picks its own timesteps from its `original_inference_steps` (50) schedule. The
`*_linspace` cases use the same config without `timestep_spacing` (as old SD 1.5 repos ship
it), so Euler and Heun take their default "linspace" spacing: fractional timesteps. The Rust
test writes that config into a copy of the model (`model_scheduler_config`).

The stochastic samplers (multi-step LCM, DPM++ 2M SDE) draw fresh noise every step. To compare
them exactly, diffusers' `randn_tensor` in those scheduler modules is replaced by the draws
Atelier's seeded stream makes for seed 7 (`noise_steps.safetensors`, `[16, 1, 4, 8, 8]`,
written by `ATELIER_WRITE_FIXTURES=1 cargo test --test reference step_noise`; the Rust test
checks the file is still what the seed draws). diffusers' DPM++ SDE also draws on its last
step, where the noise's factor is sigma = 0; Atelier skips that draw, so the n-th draw is
always the n-th step's.

LCM-distilled models take the guidance scale as a UNet input (a guidance-scale embedding,
`time_cond_proj_dim`) and run without classifier-free guidance: `tiny-lcm/` holds such a UNet
(tiny-sd15's with a random `cond_proj`) and LCMScheduler's config, for the `lcm_embedded` case.

Runs after make_reference.py and make_reference_more.py (it loads `tiny-sd15/`, `tiny-sd2v/`,
`noise.safetensors`, `noise_sd2v.safetensors`, `noise_steps.safetensors` and
`init_checker.png`) and writes only:

    tiny-lcm/unet, tiny-lcm/scheduler   the LCM-distilled UNet and its scheduler config
    expected_sampler_*.png    one per case
    cases_samplers.json       every case: settings, the timesteps of every UNet evaluation in
                              order, sigmas, the scheduler class and its full config

At the end it checks that no file it did not write has changed.

    /root/refenv/bin/python tests/reference/make_reference_samplers.py   # from the repo root
"""

import contextlib
import json
import os
import sys
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_reference as base  # noqa: E402
import make_reference_more as more  # noqa: E402
from diffusers import (  # noqa: E402
    DPMSolverMultistepScheduler,
    UNet2DConditionModel,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    LCMScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
)
from diffusers.pipelines.stable_diffusion import pipeline_stable_diffusion_img2img as img2img_mod  # noqa: E402
from diffusers.schedulers import scheduling_dpmsolver_multistep, scheduling_lcm  # noqa: E402

OUT_DIR = base.OUT_DIR
STEP_NOISE_FILE = "noise_steps.safetensors"
STEP_NOISE_SEED = 7


class StepNoise:
    """Replaces `randn_tensor` in the DPM-Solver and LCM scheduler modules with successive draws
    from noise_steps.safetensors (Atelier's stream for seed 7), counting the draws."""

    MODULES = (scheduling_dpmsolver_multistep, scheduling_lcm)

    def __init__(self):
        self.draws = more.load_noise(STEP_NOISE_FILE)
        self.used = 0

    def randn(self, shape, generator=None, device=None, dtype=None, layout=None):
        assert tuple(shape) == tuple(self.draws.shape[1:]), shape
        assert self.used < len(self.draws), "more step noise needed than the file holds"
        z = self.draws[self.used].clone().to(device=device, dtype=dtype)
        self.used += 1
        return z

    def __enter__(self):
        self.orig = [m.randn_tensor for m in self.MODULES]
        for m in self.MODULES:
            m.randn_tensor = self.randn
        return self

    def __exit__(self, *exc):
        for m, orig in zip(self.MODULES, self.orig):
            m.randn_tensor = orig


def load(model_dir):
    pipe = StableDiffusionPipeline.from_pretrained(model_dir, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class Timesteps:
    """The timestep of every UNet call, in order."""

    def __init__(self, unet):
        self.seen = []
        self.handle = unet.register_forward_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs, output):
        t = args[1] if len(args) > 1 else kwargs["timestep"]
        self.seen.append(float(torch.as_tensor(t).flatten()[0]))

    def remove(self):
        self.handle.remove()


def entry(name, sampler, model_dir, noise_file, pipe, steps, guidance, negative, called, notes,
          seed=0, step_noise=None, model_config=None):
    sched = pipe.scheduler
    sigmas = getattr(sched, "sigmas", None)
    return {
        "name": name,
        "sampler": sampler,
        "model_dir": model_dir,
        "model_scheduler_config": model_config,
        "model_overlay": None,
        "seed": seed,
        "step_noise": None if step_noise is None else STEP_NOISE_FILE,
        "step_noise_draws": None if step_noise is None else step_noise.used,
        "mode": "txt2img",
        "prompt": more.PROMPT,
        "negative_prompt": negative,
        "steps": steps,
        "guidance_scale": guidance,
        "width": 64,
        "height": 64,
        "noise": noise_file,
        "expected": f"expected_sampler_{name}.png",
        "init_noise_sigma": float(sched.init_noise_sigma),
        "unet_evaluations": len(called),
        "timesteps": called,
        "scheduler_timesteps": [float(t) for t in sched.timesteps.tolist()],
        "sigmas": None if sigmas is None else more.f32list(sigmas),
        "scheduler_class": type(sched).__name__,
        "scheduler_config": more.sched_json(sched),
        "scheduler_config_ignored_keys": more.ignored_keys(sched),
        "prediction_type": sched.config.prediction_type,
        "img2img": None,
        "notes": notes,
    }


LCM_DIR = "tiny-lcm"
LCM_COND_DIM = 8


def build_tiny_lcm():
    """An LCM-distilled UNet in miniature: tiny-sd15's UNet with `time_cond_proj_dim` and a
    random `time_embedding.cond_proj` (the guidance-scale embedding's projection), every other
    weight tiny-sd15's; and LCMScheduler's config. Only `unet/` and `scheduler/` are written
    (to tiny-lcm/): the rest of the model is tiny-sd15's, and the Rust test lays these two
    folders over a copy of it."""
    src = UNet2DConditionModel.from_pretrained(OUT_DIR / "tiny-sd15" / "unet")
    config = dict(src.config)
    config["time_cond_proj_dim"] = LCM_COND_DIM
    unet = UNet2DConditionModel.from_config(config)
    missing, unexpected = unet.load_state_dict(src.state_dict(), strict=False)
    assert missing == ["time_embedding.cond_proj.weight"] and not unexpected, (missing, unexpected)
    with torch.no_grad():
        w = unet.time_embedding.cond_proj.weight
        w.copy_(torch.randn(w.shape, generator=torch.Generator().manual_seed(11)) * 0.5)
    unet.save_pretrained(OUT_DIR / LCM_DIR / "unet", safe_serialization=True)
    sched = LCMScheduler.from_config(load(OUT_DIR / "tiny-sd15").scheduler.config)
    sched.save_pretrained(OUT_DIR / LCM_DIR / "scheduler")


def lcm_embedded_case(steps=4, guidance=8.0):
    """The tiny LCM-distilled model through StableDiffusionPipeline, which (as
    LatentConsistencyModelPipeline) gives such a UNet the embedding of w = guidance - 1 and runs
    no classifier-free guidance (so the negative prompt is unused)."""
    pipe = load(OUT_DIR / "tiny-sd15")
    pipe.unet = UNet2DConditionModel.from_pretrained(OUT_DIR / LCM_DIR / "unet")
    pipe.scheduler = LCMScheduler.from_pretrained(OUT_DIR / LCM_DIR / "scheduler")
    noise = more.load_noise("noise.safetensors")
    calls = Timesteps(pipe.unet)
    try:
        with torch.no_grad(), StepNoise() as step_noise:
            img = pipe(prompt=more.PROMPT, negative_prompt=more.NEGATIVE_PROMPT, height=64,
                       width=64, num_inference_steps=steps, guidance_scale=guidance,
                       latents=noise.clone(), output_type="np").images
    finally:
        calls.remove()
    name = "lcm_embedded"
    base.to_png(img, OUT_DIR / f"expected_sampler_{name}.png")
    print(f"{name}: {len(calls.seen)} UNet evaluations at {calls.seen}, "
          f"{step_noise.used} noise draws")
    e = entry(name, "lcm", "tiny-sd15", "noise.safetensors", pipe, steps, guidance,
              more.NEGATIVE_PROMPT, calls.seen,
              f"tiny-sd15 with an LCM-distilled UNet (time_cond_proj_dim {LCM_COND_DIM}) and "
              "LCMScheduler from tiny-lcm/: guidance as the UNet's input, w = guidance - 1, "
              "no classifier-free guidance; Atelier's step noise",
              seed=STEP_NOISE_SEED, step_noise=step_noise)
    e["model_overlay"] = LCM_DIR
    return e


def txt2img_case(name, sampler, make_sched, model_dir, noise_file, steps, guidance, notes,
                 stochastic=False, drop_spacing=False):
    """`stochastic`: feed the scheduler Atelier's step noise (seed 7). `drop_spacing`: make the
    scheduler from the model's config without `timestep_spacing`, and record that config as the
    model's own for the Rust side."""
    noise = more.load_noise(noise_file)
    pipe = load(OUT_DIR / model_dir)
    model_config = None
    config = pipe.scheduler.config
    if drop_spacing:
        model_config = more.sched_json(pipe.scheduler)
        model_config.pop("timestep_spacing")
        config = {k: v for k, v in config.items() if k != "timestep_spacing"}
    pipe.scheduler = make_sched(config)
    calls = Timesteps(pipe.unet)
    step_noise = StepNoise() if stochastic else None
    try:
        with torch.no_grad(), (step_noise or contextlib.nullcontext()):
            img = pipe(prompt=more.PROMPT, negative_prompt=more.NEGATIVE_PROMPT, height=64,
                       width=64, num_inference_steps=steps, guidance_scale=guidance,
                       latents=noise.clone(), output_type="np").images
    finally:
        calls.remove()
    base.to_png(img, OUT_DIR / f"expected_sampler_{name}.png")
    print(f"{name}: {len(calls.seen)} UNet evaluations at {calls.seen}"
          + (f", {step_noise.used} noise draws" if step_noise else ""))
    return entry(name, sampler, model_dir, noise_file, pipe, steps, guidance,
                 more.NEGATIVE_PROMPT, calls.seen, notes,
                 seed=STEP_NOISE_SEED if stochastic else 0, step_noise=step_noise,
                 model_config=model_config)


def heun_img2img_case(steps=10, strength=0.5, guidance=base.GUIDANCE):
    """Heun image-to-image, made deterministic as make_reference_more.py's img2img case: the init
    latents are the VAE mean, and the pipeline's noise is noise.safetensors. diffusers starts at
    index `t_start * order` of Heun's doubled timesteps and noises to sigma there."""
    noise = more.load_noise("noise.safetensors")
    sd = load(base.MODEL_DIR)
    pipe = StableDiffusionImg2ImgPipeline(**sd.components, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = HeunDiscreteScheduler.from_config(pipe.scheduler.config)
    init_pil = Image.open(OUT_DIR / "init_checker.png").convert("RGB")
    x = pipe.image_processor.preprocess(init_pil)
    with torch.no_grad():
        init_latents = pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor

    def fixed_randn(shape, generator=None, device=None, dtype=None, layout=None):
        assert tuple(shape) == tuple(noise.shape), shape
        return noise.clone().to(device=device, dtype=dtype)

    orig = img2img_mod.randn_tensor
    img2img_mod.randn_tensor = fixed_randn
    calls = Timesteps(pipe.unet)
    try:
        with torch.no_grad():
            img = pipe(prompt=more.PROMPT, negative_prompt=more.NEGATIVE_PROMPT,
                       image=init_latents.clone(), strength=strength, num_inference_steps=steps,
                       guidance_scale=guidance, output_type="np").images
    finally:
        img2img_mod.randn_tensor = orig
        calls.remove()
    name = "heun_img2img"
    base.to_png(img, OUT_DIR / f"expected_sampler_{name}.png")
    t_start = steps - min(int(steps * strength), steps)
    print(f"{name}: {len(calls.seen)} UNet evaluations at {calls.seen}")
    e = entry(name, "heun", "tiny-sd15", "noise.safetensors", pipe, steps, guidance,
              more.NEGATIVE_PROMPT, calls.seen,
              "img2img: the last int(steps * strength) = 5 of 10 Heun steps, 9 evaluations; the "
              "start latents are init + sigma[2 * t_start] * noise")
    e["mode"] = "img2img"
    e["img2img"] = {
        "init_image": "init_checker.png",
        "strength": strength,
        "t_start_index": t_start,
        "first_evaluation_index": t_start * pipe.scheduler.order,
        "start_sigma": float(pipe.scheduler.sigmas[t_start * pipe.scheduler.order]),
        "init_latent": "mean",
        "noise": "noise.safetensors (diffusers' randn_tensor patched to return it)",
    }
    return e


def main():
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    for needed in ("tiny-sd15/model_index.json", "tiny-sd2v/model_index.json",
                   "noise_sd2v.safetensors", "init_checker.png", STEP_NOISE_FILE):
        assert (OUT_DIR / needed).exists(), f"{needed}: run make_reference*.py first"
    ours = lambda k: (k.startswith(("expected_sampler_", LCM_DIR + "/"))  # noqa: E731
                      or k == "cases_samplers.json")
    before = {k: v for k, v in more.sha_all().items() if not ours(k)}
    build_tiny_lcm()

    lcm_note = ("LCMScheduler.from_config(DDIM config): original_inference_steps 50 and "
                "timestep_scaling 10 (LCM defaults); its timesteps ignore timestep_spacing and "
                "steps_offset. One step: denoised = c_out(999) * x0 + c_skip(999) * x, no noise")
    lcm4_note = ("4 steps at [999, 759, 499, 259]; after each step but the last the clean "
                 "estimate is noised afresh to the next timestep with Atelier's step noise")
    sde = lambda c: DPMSolverMultistepScheduler.from_config(  # noqa: E731
        c, algorithm_type="sde-dpmsolver++", use_karras_sigmas=True, solver_order=2)
    sde_note = ("sde-dpmsolver++, solver_order 2, midpoint, Karras sigmas, lower_order_final "
                "(first order on the last step, to sigma 0); fresh noise every step: Atelier's "
                "step noise (diffusers' last draw is multiplied by 0)")
    cases = [
        txt2img_case("euler", "euler", EulerDiscreteScheduler.from_config, "tiny-sd15",
                     "noise.safetensors", 10, base.GUIDANCE,
                     "leading spacing + steps_offset 1 from the DDIM config: init_noise_sigma "
                     "sqrt(sigma_max^2 + 1)"),
        txt2img_case("heun", "heun", HeunDiscreteScheduler.from_config, "tiny-sd15",
                     "noise.safetensors", 8, base.GUIDANCE,
                     "8 steps = 15 UNet evaluations (no corrector on the last step)"),
        txt2img_case("euler_sd2v", "euler", EulerDiscreteScheduler.from_config, "tiny-sd2v",
                     "noise_sd2v.safetensors", 10, base.GUIDANCE, "v-prediction"),
        txt2img_case("heun_sd2v", "heun", HeunDiscreteScheduler.from_config, "tiny-sd2v",
                     "noise_sd2v.safetensors", 8, base.GUIDANCE,
                     "v-prediction: the corrector converts v at the predicted point's sigma"),
        heun_img2img_case(),
        txt2img_case("euler_linspace", "euler", EulerDiscreteScheduler.from_config, "tiny-sd15",
                     "noise.safetensors", 7, base.GUIDANCE,
                     "config without timestep_spacing: Euler's default linspace, fractional "
                     "timesteps 999 * k / 6, init_noise_sigma = sigma_max", drop_spacing=True),
        txt2img_case("heun_linspace", "heun", HeunDiscreteScheduler.from_config, "tiny-sd15",
                     "noise.safetensors", 5, base.GUIDANCE,
                     "config without timestep_spacing: linspace, fractional timesteps",
                     drop_spacing=True),
        txt2img_case("lcm1", "lcm", LCMScheduler.from_config, "tiny-sd15",
                     "noise.safetensors", 1, 1.5, lcm_note),
        txt2img_case("lcm4", "lcm", LCMScheduler.from_config, "tiny-sd15",
                     "noise.safetensors", 4, 1.0,
                     lcm4_note + "; guidance 1: no classifier-free guidance, one UNet pass",
                     stochastic=True),
        txt2img_case("lcm4_sd2v", "lcm", LCMScheduler.from_config, "tiny-sd2v",
                     "noise_sd2v.safetensors", 4, 1.5, lcm4_note + "; v-prediction",
                     stochastic=True),
        lcm_embedded_case(),
        txt2img_case("dpmpp_2m_sde_karras", "dpmpp-2m-sde-karras", sde, "tiny-sd15",
                     "noise.safetensors", 12, base.GUIDANCE, sde_note, stochastic=True),
        txt2img_case("dpmpp_2m_sde_karras_sd2v", "dpmpp-2m-sde-karras", sde, "tiny-sd2v",
                     "noise_sd2v.safetensors", 8, base.GUIDANCE, sde_note + "; v-prediction",
                     stochastic=True),
    ]
    with open(OUT_DIR / "cases_samplers.json", "w") as f:
        json.dump(more.finite({
            "description": "diffusers reference cases for Euler, Heun, LCM and DPM++ 2M SDE "
                           "Karras on the tiny models; generated by "
                           "tests/reference/make_reference_samplers.py",
            "png_quantisation": "uint8 = round(clamp(x/2+0.5, 0, 1) * 255)",
            "noise_usage": "txt2img: noise is passed as latents= and multiplied by "
                           "init_noise_sigma; img2img: see the case's img2img block; "
                           "step_noise: the schedulers' randn_tensor returned successive "
                           "draws of that file (Atelier's stream for the case's seed)",
            "timesteps_note": "timesteps: what the UNet was called with, in order (Heun repeats "
                              "every timestep but the first); scheduler_timesteps: the "
                              "scheduler's full list",
            "cases": cases,
            "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                         "diffusers": more.diffusers.__version__,
                         "transformers": more.transformers.__version__},
        }), f, indent=1)
    after = {k: v for k, v in more.sha_all().items() if not ours(k)}
    assert after == before, "a file this script does not own changed"


if __name__ == "__main__":
    main()
