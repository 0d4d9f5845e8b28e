"""diffusers reference cases for zero-terminal-SNR schedules (`rescale_betas_zero_snr`), the
schedule Atelier Mini is trained on: DPM++ 2M on trailing timesteps (the Mini's default) and DDIM.

Runs after make_reference.py / make_reference_more.py (it loads `tiny-sd2v/` and
`noise_sd2v.safetensors`) and writes only:

    expected_zsnr_*.png    one per case
    cases_zero_snr.json    every case: settings and the scheduler config to put in place of
                           tiny-sd2v's own (the Rust test copies the model to a temp folder)

    /root/refenv/bin/python tests/reference/make_reference_zero_snr.py   # from the repo root
"""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_reference as base  # noqa: E402
import make_reference_more as more  # noqa: E402
from diffusers import (  # noqa: E402
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    StableDiffusionPipeline,
)

OUT_DIR = base.OUT_DIR
STEPS = 6
GUIDANCE = 5.0


def case(name, sampler, make_sched):
    noise_file = "noise_sd2v.safetensors"
    noise = more.load_noise(noise_file)
    pipe = StableDiffusionPipeline.from_pretrained(more.SD2V_DIR, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_sched(pipe.scheduler.config)
    img, _ = more.run_pipe(pipe, prompt=more.PROMPT, negative_prompt=more.NEGATIVE_PROMPT,
                           height=64, width=64, num_inference_steps=STEPS,
                           guidance_scale=GUIDANCE, eta=0.0, latents=noise.clone())
    expected = f"expected_zsnr_{name}.png"
    base.to_png(img, OUT_DIR / expected)
    sched = pipe.scheduler
    # The config written into the model folder: DDIMScheduler keys, as Atelier's exports have.
    config = {k: v for k, v in dict(pipe.scheduler.config).items() if not k.startswith("_")}
    config["_class_name"] = "DDIMScheduler"
    print(f"{name}: timesteps {sched.timesteps.tolist()}")
    return {
        "name": name,
        "model_dir": "tiny-sd2v",
        "sampler": sampler,
        "noise": noise_file,
        "expected": expected,
        "prompt": more.PROMPT,
        "negative_prompt": more.NEGATIVE_PROMPT,
        "steps": STEPS,
        "guidance_scale": GUIDANCE,
        "width": 64,
        "height": 64,
        "timesteps": [int(t) for t in sched.timesteps.tolist()],
        "scheduler_class": sched.__class__.__name__,
        "scheduler_config": {
            "_class_name": "DDIMScheduler",
            "beta_start": config["beta_start"],
            "beta_end": config["beta_end"],
            "beta_schedule": config["beta_schedule"],
            "num_train_timesteps": config["num_train_timesteps"],
            "prediction_type": "v_prediction",
            "rescale_betas_zero_snr": True,
            "timestep_spacing": "trailing",
            "clip_sample": False,
            "set_alpha_to_one": False,
            "steps_offset": 1,
        },
    }


def main():
    zero = dict(rescale_betas_zero_snr=True, timestep_spacing="trailing",
                prediction_type="v_prediction")
    cases = [
        case("dpmpp2m", "dpmpp-2m", lambda c: DPMSolverMultistepScheduler.from_config(
            c, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=False, **zero)),
        case("ddim", "ddim", lambda c: DDIMScheduler.from_config(c, **zero)),
    ]
    with open(OUT_DIR / "cases_zero_snr.json", "w") as f:
        json.dump({"diffusers": more.diffusers.__version__, "torch": torch.__version__,
                   "cases": cases}, f, indent=1)


if __name__ == "__main__":
    main()
