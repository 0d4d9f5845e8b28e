"""The tensor names and shapes of real SD 1.5, SD 2.1 and SDXL base checkpoints in the
original (LDM) layout, without downloading them: each family's standard diffusers models are
built on PyTorch's meta device (no memory, no weights) and renamed with diffusers' own
diffusers -> original conversion scripts. Output: tests/fixtures/ldm_keys/<family>.json with
`ldm` (name -> shape), `diffusers` ("component/name" -> shape) and the diffusers `configs`.

Two differences from the scripts' output are applied so the lists look like the files users
have: SD 2.x checkpoints carry OpenCLIP's 24th text layer (which diffusers drops), and SDXL
base checkpoints store OpenCLIP-G's projection as `text_projection` (x @ P, transposed) rather
than `text_projection.weight`.

Run (the two scripts come from diffusers' repository, `scripts/`, not its pip package):
    /root/refenv/bin/python tests/reference/make_ldm_key_lists.py DIR_WITH_THE_TWO_SCRIPTS
"""

import importlib.util
import json
import os
import sys

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

scripts = sys.argv[1]
OUT = "tests/fixtures/ldm_keys"
os.makedirs(OUT, exist_ok=True)


def load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(scripts, name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


sd = load("convert_diffusers_to_original_stable_diffusion")
xl = load("convert_diffusers_to_original_sdxl")

VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
    block_out_channels=[128, 256, 512, 512],
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
)
CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
              num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu")
OPEN_CLIP_H = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                   num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu")
OPEN_CLIP_G = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                   num_attention_heads=20, max_position_embeddings=77, hidden_act="gelu",
                   projection_dim=1280)
SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=[320, 640, 1280, 1280],
    down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    cross_attention_dim=768, attention_head_dim=8,
)
SD21_UNET = dict(SD15_UNET, sample_size=96, cross_attention_dim=1024,
                 attention_head_dim=[5, 10, 20, 20], use_linear_projection=True)
SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=[320, 640, 1280],
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    transformer_layers_per_block=[1, 2, 10], attention_head_dim=[5, 10, 20],
    cross_attention_dim=2048, use_linear_projection=True, addition_embed_type="text_time",
    addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
)


def shapes(d):
    return {k: list(v.shape) for k, v in d.items()}


def build(family, unet_cfg, te_cfg, te2_cfg=None):
    with torch.device("meta"):
        unet = UNet2DConditionModel(**unet_cfg)
        vae = AutoencoderKL(**VAE)
        te = CLIPTextModel(CLIPTextConfig(**te_cfg))
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(**te2_cfg)) if te2_cfg else None
    comps = {"unet": unet.state_dict(), "vae": vae.state_dict(), "text_encoder": te.state_dict()}
    if te2 is not None:
        comps["text_encoder_2"] = te2.state_dict()
    diffusers = {f"{c}/{k}": list(v.shape) for c, d in comps.items() for k, v in d.items()
                 if not k.endswith("position_ids")}
    conv = xl if family == "sdxl" else sd
    ldm = {}
    ldm.update({"model.diffusion_model." + k: v for k, v in conv.convert_unet_state_dict(comps["unet"]).items()})
    ldm.update({"first_stage_model." + k: v for k, v in conv.convert_vae_state_dict(comps["vae"]).items()})
    if family == "sd15":
        ldm.update({"cond_stage_model.transformer." + k: v for k, v in comps["text_encoder"].items()})
    elif family == "sd21":
        t = {"transformer." + k: v for k, v in comps["text_encoder"].items()}
        t = sd.convert_text_enc_state_dict_v20(t)
        ldm.update({"cond_stage_model.model." + k: v for k, v in t.items()})
        # OpenCLIP-H's 24th layer, in every SD 2.x checkpoint (diffusers drops it).
        for k, v in list(ldm.items()):
            if ".resblocks.22." in k:
                ldm[k.replace(".resblocks.22.", ".resblocks.23.")] = v
    else:
        ldm.update({"conditioner.embedders.0.transformer." + k: v for k, v in comps["text_encoder"].items()})
        t = xl.convert_openclip_text_enc_state_dict(comps["text_encoder_2"])
        p = t.pop("text_projection.weight")
        t["text_projection"] = p.T
        ldm.update({"conditioner.embedders.1.model." + k: v for k, v in t.items()})
    configs = {"unet": dict(unet.config), "vae": dict(vae.config), "text_encoder": te.config.to_dict()}
    if te2 is not None:
        configs["text_encoder_2"] = te2.config.to_dict()
    doc = {"ldm": shapes(ldm), "diffusers": diffusers,
           "configs": json.loads(json.dumps(configs, default=str))}
    with open(f"{OUT}/{family}.json", "w") as f:
        json.dump(doc, f, separators=(",", ":"), sort_keys=True)
    print(family, len(ldm), "LDM tensors,", len(diffusers), "diffusers tensors")


build("sd15", SD15_UNET, CLIP_L)
build("sd21", SD21_UNET, OPEN_CLIP_H)
build("sdxl", SDXL_UNET, CLIP_L, OPEN_CLIP_G)
