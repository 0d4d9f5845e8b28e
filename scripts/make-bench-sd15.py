"""Full-size SD 1.5 architecture with random weights, for the load and LoRA benchmarks
(nothing can be downloaded here): a diffusers folder in fp16 (`OUT/sd15-folder`), a kohya
LoRA of rank 32 on every attention projection of the UNet and the text encoder
(`OUT/bench-lora.safetensors`). The single file is then written by Atelier itself:
    atelier dev single-file --model OUT/sd15-folder --out OUT/sd15.safetensors --half --no-configs
Run: python scripts/make-bench-sd15.py OUT   (needs torch, diffusers, transformers)
"""

import os
import shutil
import sys

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

out = sys.argv[1]
folder = os.path.join(out, "sd15-folder")
torch.manual_seed(0)
unet = UNet2DConditionModel(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=[320, 640, 1280, 1280],
    down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    cross_attention_dim=768, attention_head_dim=8,
).half()
vae = AutoencoderKL(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
    block_out_channels=[128, 256, 512, 512],
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
).half()
te = CLIPTextModel(CLIPTextConfig(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
    num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
)).half()
unet.save_pretrained(os.path.join(folder, "unet"))
vae.save_pretrained(os.path.join(folder, "vae"))
te.save_pretrained(os.path.join(folder, "text_encoder"))
repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
tok = CLIPTokenizer(os.path.join(repo, "assets/clip/vocab.json"), os.path.join(repo, "assets/clip/merges.txt"))
tok.save_pretrained(os.path.join(folder, "tokenizer"))
DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
              clip_sample=False, set_alpha_to_one=False, steps_offset=1).save_pretrained(
    os.path.join(folder, "scheduler"))
with open(os.path.join(folder, "model_index.json"), "w") as f:
    f.write('{"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"], '
            '"vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"], '
            '"tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "DDIMScheduler"]}')

lora = {}
rank = 32
for prefix, model in [("lora_unet", unet), ("lora_te", te)]:
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and any(
                name.endswith(s) for s in ["to_q", "to_k", "to_v", "to_out.0", "q_proj", "k_proj", "v_proj", "out_proj"]):
            key = prefix + "_" + name.replace(".", "_")
            lora[key + ".lora_down.weight"] = (torch.randn(rank, mod.in_features) * 0.01).half()
            lora[key + ".lora_up.weight"] = (torch.randn(mod.out_features, rank) * 0.01).half()
            lora[key + ".alpha"] = torch.tensor(float(rank / 2)).half()
save_file(lora, os.path.join(out, "bench-lora.safetensors"))
print(len(lora) // 3, "LoRA modules")
