"""Single-file (LDM layout) checkpoints checked against diffusers' own converter, and the
pickle fixtures the Rust tests read.

1. Each tiny model is written as one LDM-layout file by Atelier (`atelier dev single-file
   --no-configs`), then loaded by diffusers' `from_single_file` (its LDM -> diffusers
   converter, given the folder's configs): every tensor must equal the folder's. This pins
   Atelier's key map (both directions) to diffusers' convention, independently of our code.
2. `tiny-sd2v-ldm.ckpt`: the SD 2 model as `torch.save` writes a training checkpoint
   (`state_dict` wrapper, `global_step`, EMA copies under `model_ema.*`, fp16 weights, and
   Atelier's configs as a string entry), read by Atelier's no-code pickle reader.

Run from the repository root after `cargo build`:
    /root/refenv/bin/python tests/reference/make_reference_single_file.py target/debug/atelier
"""

import json
import os
import subprocess
import sys
import tempfile

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint

ROOT = "tests/fixtures/reference"
atelier = sys.argv[1]


def export(model, out, no_configs):
    args = [atelier, "dev", "single-file", "--model", f"{ROOT}/{model}", "--out", out]
    if no_configs:
        args.append("--no-configs")
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)


def check_against_diffusers(model, cls):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{model}.safetensors")
        export(model, path, no_configs=True)
        folder = cls.from_pretrained(f"{ROOT}/{model}", local_files_only=True)
        single = cls.from_single_file(path, config=f"{ROOT}/{model}", local_files_only=True)
        total = 0
        for name in ["unet", "vae", "text_encoder", "text_encoder_2"]:
            a = getattr(folder, name, None)
            if a is None:
                continue
            sa, sb = a.state_dict(), getattr(single, name).state_dict()
            if name == "text_encoder_2":
                # from_single_file recognises SDXL's OpenCLIP-G by its 32 layers (a key of
                # layer 22), which a tiny model lacks; call its converter directly.
                sb = convert_open_clip_checkpoint(a, load_file(path), prefix="conditioner.embedders.1.model.")
            sa = {k: v for k, v in sa.items() if not k.endswith("position_ids")}
            sb = {k: v for k, v in sb.items() if not k.endswith("position_ids")}
            assert sa.keys() == sb.keys(), (model, name, sorted(sa.keys() ^ sb.keys())[:10])
            for k in sa:
                assert torch.equal(sa[k], sb[k]), (model, name, k)
            total += len(sa)
        print(f"{model}: {total} tensors equal after diffusers' from_single_file")


check_against_diffusers("tiny-sd15", StableDiffusionPipeline)
check_against_diffusers("tiny-sd2v", StableDiffusionPipeline)
check_against_diffusers("tiny-sdxl", StableDiffusionXLPipeline)

# 2. The pickle fixture.
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "sd2v.safetensors")
    export("tiny-sd2v", path, no_configs=False)
    with safe_open(path, "pt") as f:
        configs = f.metadata()["atelier.configs"]
    sd = {k: v.half() for k, v in load_file(path).items()}
    # EMA copies, as CompVis training checkpoints keep them (names without the dots).
    for k in list(sd)[:20]:
        if k.startswith("model.diffusion_model."):
            sd["model_ema." + k[len("model."):].replace(".", "")] = sd[k].clone() * 0
    # Storage layouts torch.save keeps as they are: a column-major (transposed) weight, and
    # two tensors that are views at offsets into one shared storage.
    mats = [k for k, v in sd.items() if k.startswith("model.diffusion_model.") and v.dim() == 2]
    sd[mats[0]] = sd[mats[0]].t().contiguous().t()
    a, b = mats[1], mats[2]
    shared = torch.cat([sd[a].flatten(), sd[b].flatten()])
    sd[a] = shared[: sd[a].numel()].view(sd[a].shape)
    sd[b] = shared[sd[a].numel():].view(sd[b].shape)
    print("column-major:", mats[0], "shared storage:", a, b)
    sd["model_ema.decay"] = torch.tensor(0.9999)
    sd["model_ema.num_updates"] = torch.tensor(1000, dtype=torch.int32)
    torch.save(
        {"state_dict": sd, "global_step": 123456, "epoch": 3, "atelier.configs": configs},
        f"{ROOT}/tiny-sd2v-ldm.ckpt",
    )
    print("wrote", f"{ROOT}/tiny-sd2v-ldm.ckpt")

