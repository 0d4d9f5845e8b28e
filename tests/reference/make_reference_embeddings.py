#!/usr/bin/env python3
"""Textual-inversion (embedding) reference fixtures for Atelier's Rust tests.

Writes small random embedding files for the tiny models (`tiny-sd15/`, `tiny-sdxl/`) in the
three layouts found in the wild (research notes §4.1), and the pictures diffusers makes with them.

Runs after make_reference.py and make_reference_more.py (it loads `tiny-sd15/`, `tiny-sdxl/`,
`noise.safetensors`, `noise_sdxl.safetensors`, `expected.png`, `expected_sdxl_noneg.png`) and
writes only under `tests/fixtures/reference/embeddings/`:

    bad-hands.pt              AUTOMATIC1111 .pt (torch.save of a plain dict), tiny-sd15, 2 vectors
    style-one.safetensors     kohya / Civitai: one tensor `emb_params` [1, C], tiny-sd15
    xl-style.safetensors      SDXL: `clip_l` [3, C1] and `clip_g` [3, C2], tiny-sdxl
    expected_ti_*.png         one per case, see cases_embeddings.json
    cases_embeddings.json     every case: model, embeddings, settings, token ids, checks

    /root/refenv/bin/python tests/reference/make_reference_embeddings.py   # from the repo root

How the expected pictures are made
----------------------------------
diffusers itself: a fresh pipeline, `pipe.load_textual_inversion(path, token=<file stem>)` for the
SD 1.x files; for the SDXL file the documented two calls
`pipe.load_textual_inversion(sd["clip_g"], token=…, text_encoder=pipe.text_encoder_2,
tokenizer=pipe.tokenizer_2)` and `pipe.load_textual_inversion(sd["clip_l"], token=…,
text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)`. The prompt handed to the pipeline
holds the name as one plain word ("…, bad-hands"); diffusers adds the tokens NAME, NAME_1, …,
NAME_{n-1} and its `maybe_convert_prompt` rewrites NAME to "NAME NAME_1 …" (n positions). The
script captures the ids that really reach the text encoder(s) and asserts the expansion.

Checks
------
* The token-embedding rows diffusers added equal the file's vectors.
* A1111-style insertion, done by this script without diffusers' tokens (plain pipeline; tokenize
  the prompt, find the name's own BPE ids, put n placeholder positions there, overwrite the
  token-embedding output at those positions with the vectors) gives the same text-encoder output
  as diffusers (`a1111_style_max_abs`).
* The embedding visibly changes the picture: mean |Δpixel| against the same prompt run without
  the embedding loaded (the name then is ordinary BPE text) > 3/255 (`mean_abs_vs_plain_word`).
* The plain pipelines reproduce the existing fixtures (`expected.png`, `expected_sdxl_noneg.png`).
* No file outside `embeddings/` changes; the output is bit-for-bit reproducible (every random
  tensor comes from its own seeded torch.Generator; the safetensors header is written by hand in a
  fixed order; torch.save's zip is deterministic).
"""

import hashlib
import json
import os
import struct
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_reference as base  # noqa: E402
import make_reference_more as more  # noqa: E402

import diffusers  # noqa: E402
import transformers  # noqa: E402

OUT_DIR = base.OUT_DIR
EMB_DIR = OUT_DIR / "embeddings"
PROMPT = base.PROMPT                      # "a red cat sitting on a blue mat"
STEPS = 10
GUIDANCE = 7.5
WIDTH = HEIGHT = 64

SD15 = {"model_dir": "tiny-sd15", "noise": "noise.safetensors", "pipeline": "StableDiffusionPipeline"}
SDXL = {"model_dir": "tiny-sdxl", "noise": "noise_sdxl.safetensors",
        "pipeline": "StableDiffusionXLPipeline"}

SEEDS = {"bad-hands": 6101, "style-one": 6102, "xl-style": 6103}
# Every vector is drawn from N(0, 1), then rescaled to the mean L2 norm of the rows of the token
# embedding table of the encoder it is meant for (times REL_NORM).
REL_NORM = 1.0

CASES = [
    # name, model, embedding files, prompt, negative prompt given to diffusers
    ("ti_pt", SD15, ["bad-hands.pt"], f"{PROMPT}, bad-hands", "blurry"),
    ("ti_negative", SD15, ["bad-hands.pt"], PROMPT, "blurry, bad-hands"),
    ("ti_safetensors", SD15, ["style-one.safetensors"], f"style-one, {PROMPT}", "blurry"),
    # SDXL: no negative prompt, as `sdxl_noneg` in cases_more.json (diffusers negative_prompt=None
    # -> zero negative embeddings and zero negative pooled embeddings, force_zeros_for_empty_prompt;
    # Atelier treats an empty negative prompt the same way).
    ("ti_sdxl", SDXL, ["xl-style.safetensors"], f"{PROMPT}, xl-style", None),
]


# ---------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------

def load(cfg):
    if cfg is SD15:
        return more.load_sd15(torch.float32)       # tiny-sd15 ships a DDIM scheduler config
    return more.load_sdxl(torch.float32)            # DDIMScheduler.from_config, as the sdxl cases


def encoders(pipe):
    """[(tokenizer, text_encoder, file key)] in pipeline order."""
    if getattr(pipe, "text_encoder_2", None) is not None:
        return [(pipe.tokenizer, pipe.text_encoder, "clip_l"), (pipe.tokenizer_2, pipe.text_encoder_2, "clip_g")]
    return [(pipe.tokenizer, pipe.text_encoder, None)]


def hidden_size(model_dir, sub):
    """From the tiny model's text encoder config (not from the loaded model)."""
    return int(json.loads((OUT_DIR / model_dir / sub / "config.json").read_text())["hidden_size"])


def row_norm(te):
    w = te.get_input_embeddings().weight.detach()
    return float(w.norm(dim=1).mean())


# ---------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------

def draw(gen, n, c, norm):
    v = torch.randn((n, c), generator=gen, dtype=torch.float32)
    return (v / v.norm(dim=1, keepdim=True) * (norm * REL_NORM)).contiguous()


ST_DTYPE = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def save_safetensors(tensors, path):
    """Plain safetensors file without `__metadata__`, header in a fixed order (tensors sorted by
    alignment then name, as safetensors' save_file), padded with spaces to a multiple of 8."""
    names = sorted(tensors, key=lambda k: (-tensors[k].element_size(), k))
    header, blobs, off = {}, [], 0
    for k in names:
        t = tensors[k].contiguous()
        b = t.reshape(-1).view(torch.uint8).numpy().tobytes()
        header[k] = {"dtype": ST_DTYPE[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    back = load_file(str(path))
    assert back.keys() == tensors.keys() and all(torch.equal(back[k], v) for k, v in tensors.items())


def write_files(sd15, sdxl):
    files = {}
    c = hidden_size("tiny-sd15", "text_encoder")
    assert c == sd15.text_encoder.get_input_embeddings().weight.shape[1]
    norm = row_norm(sd15.text_encoder)

    # AUTOMATIC1111 .pt: a plain dict, torch.save (zip format), string_to_param["*"] [n, C] f32.
    gen = torch.Generator().manual_seed(SEEDS["bad-hands"])
    v = draw(gen, 2, c, norm)
    obj = {"string_to_token": {"*": 265}, "string_to_param": {"*": v.clone()}, "name": "bad-hands",
           "step": 1000, "sd_checkpoint": None, "sd_checkpoint_name": None}
    path = EMB_DIR / "bad-hands.pt"
    torch.save(obj, str(path))
    back = torch.load(str(path), weights_only=True)
    assert torch.equal(back["string_to_param"]["*"], v) and back["string_to_token"] == {"*": 265}
    files["bad-hands"] = {"file": path.name, "model_dir": "tiny-sd15",
                          "format": "AUTOMATIC1111 .pt: torch.save (zip) of a plain dict "
                                    "{string_to_token: {'*': 265}, string_to_param: {'*': f32 [2, C]}, "
                                    "name, step: 1000, sd_checkpoint: None, sd_checkpoint_name: None}",
                          "tensors": {"string_to_param/*": [2, c]}, "vectors": 2, "hidden": {"clip": c},
                          "row_norm_target": {"clip": norm * REL_NORM}, "vec": {"clip": v}}

    # kohya / Civitai safetensors: one tensor emb_params [n, C].
    gen = torch.Generator().manual_seed(SEEDS["style-one"])
    v = draw(gen, 1, c, norm)
    path = EMB_DIR / "style-one.safetensors"
    save_safetensors({"emb_params": v}, path)
    files["style-one"] = {"file": path.name, "model_dir": "tiny-sd15",
                          "format": "safetensors, single tensor emb_params f32 [1, C], no metadata",
                          "tensors": {"emb_params": [1, c]}, "vectors": 1, "hidden": {"clip": c},
                          "row_norm_target": {"clip": norm * REL_NORM}, "vec": {"clip": v}}

    # SDXL: clip_l [n, C1] (text_encoder), clip_g [n, C2] (text_encoder_2).
    c1 = hidden_size("tiny-sdxl", "text_encoder")
    c2 = hidden_size("tiny-sdxl", "text_encoder_2")
    assert c1 == sdxl.text_encoder.get_input_embeddings().weight.shape[1]
    assert c2 == sdxl.text_encoder_2.get_input_embeddings().weight.shape[1]
    n1, n2 = row_norm(sdxl.text_encoder), row_norm(sdxl.text_encoder_2)
    gen = torch.Generator().manual_seed(SEEDS["xl-style"])
    vl = draw(gen, 3, c1, n1)
    vg = draw(gen, 3, c2, n2)
    path = EMB_DIR / "xl-style.safetensors"
    save_safetensors({"clip_l": vl, "clip_g": vg}, path)
    files["xl-style"] = {"file": path.name, "model_dir": "tiny-sdxl",
                         "format": "SDXL safetensors: clip_l f32 [3, C1] (text_encoder), clip_g f32 [3, C2] "
                                   "(text_encoder_2), no metadata",
                         "tensors": {"clip_g": [3, c2], "clip_l": [3, c1]}, "vectors": 3,
                         "hidden": {"clip_l": c1, "clip_g": c2},
                         "row_norm_target": {"clip_l": n1 * REL_NORM, "clip_g": n2 * REL_NORM},
                         "vec": {"clip_l": vl, "clip_g": vg}}
    return files


def diffusers_load(pipe, file_name):
    token = Path(file_name).stem
    path = EMB_DIR / file_name
    if file_name.endswith(".pt") or "emb_params" in load_file(str(path)):
        pipe.load_textual_inversion(str(path), token=token)
        return
    sd = load_file(str(path))
    pipe.load_textual_inversion(sd["clip_g"], token=token, text_encoder=pipe.text_encoder_2,
                                tokenizer=pipe.tokenizer_2)
    pipe.load_textual_inversion(sd["clip_l"], token=token, text_encoder=pipe.text_encoder,
                                tokenizer=pipe.tokenizer)


# ---------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------

class IdCapture:
    """input_ids of every text-encoder call, per encoder, in call order."""

    def __init__(self, pipe):
        self.ids = {}
        self.handles = []
        for i, (_, te, _) in enumerate(encoders(pipe)):
            self.ids[i] = []
            self.handles.append(te.register_forward_pre_hook(self._hook(i), with_kwargs=True))

    def _hook(self, i):
        def f(module, args, kwargs):
            x = args[0] if args else kwargs["input_ids"]
            self.ids[i].append([int(t) for t in x[0].tolist()])
        return f

    def remove(self):
        for h in self.handles:
            h.remove()


def run(pipe, cfg, prompt, negative, guidance=GUIDANCE):
    cap = IdCapture(pipe)
    try:
        noise = more.load_noise(cfg["noise"])
        img, _ = more.run_pipe(pipe, prompt=prompt, negative_prompt=negative, height=HEIGHT, width=WIDTH,
                               num_inference_steps=STEPS, guidance_scale=guidance, eta=0.0,
                               latents=noise.clone())
    finally:
        cap.remove()
    return img, cap.ids


def png_u8(path):
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


def u8(img):
    return np.round(img[0] * 255.0).clip(0, 255).astype(np.int16)


# ---------------------------------------------------------------------------
# A1111-style insertion, independent of diffusers' added tokens
# ---------------------------------------------------------------------------

def a1111_ids(tok, text, names):
    """BOS + body + EOS + padding (tokenizer's pad id), the name's own BPE ids replaced by n
    placeholder ids 0; returns (ids [77], {position: (name, row)})."""
    body_in = tok(text, add_special_tokens=False, truncation=False).input_ids
    name_ids = {nm: tok(nm, add_special_tokens=False).input_ids for nm in names}
    body, fixes, i = [], {}, 0
    while i < len(body_in):
        for nm in sorted(names, key=lambda k: -len(name_ids[k])):
            ids = name_ids[nm]
            if body_in[i:i + len(ids)] == ids:
                start = 1 + len(body)                 # +1: BOS
                for r in range(names[nm]):
                    fixes[start + r] = (nm, r)
                body += [0] * names[nm]
                i += len(ids)
                break
        else:
            body.append(body_in[i])
            i += 1
    ids = [tok.bos_token_id] + body + [tok.eos_token_id]
    assert len(ids) <= tok.model_max_length
    ids += [tok.pad_token_id] * (tok.model_max_length - len(ids))
    return ids, fixes


def a1111_encode(te, ids, fixes, vecs):
    """te(ids) with the token-embedding output at the fixed positions replaced by the vectors."""
    def hook(module, args, out):
        out = out.clone()
        for pos, (nm, r) in fixes.items():
            out[0, pos] = vecs[nm][r]
        return out
    h = te.get_input_embeddings().register_forward_hook(hook)
    try:
        with torch.no_grad():
            return te(torch.tensor([ids]), output_hidden_states=True)
    finally:
        h.remove()


def a1111_check(cfg, prompt, negative, files, emb_names):
    """max |diffusers TI prompt embeddings - A1111-style embeddings| over prompt (and negative)."""
    plain = load(cfg)
    ti = load(cfg)
    for f in emb_names:
        diffusers_load(ti, f)
    diffs = {}
    if cfg is SD15:
        vecs = {Path(f).stem: files[Path(f).stem]["vec"]["clip"] for f in emb_names}
        names = {k: v.shape[0] for k, v in vecs.items()}
        with torch.no_grad():
            pe, npe = ti.encode_prompt(prompt, ti.device, 1, True, negative)
        for label, text, ref in (("prompt", prompt, pe), ("negative_prompt", negative, npe)):
            ids, fixes = a1111_ids(plain.tokenizer, text, names)
            out = a1111_encode(plain.text_encoder, ids, fixes, vecs)
            diffs[label] = float((out.last_hidden_state - ref).abs().max())
            diffs[f"{label}_positions"] = sorted(fixes)
    else:
        with torch.no_grad():
            pe, npe, pp, npp = ti.encode_prompt(prompt, device=ti.device, num_images_per_prompt=1,
                                                do_classifier_free_guidance=True, negative_prompt=negative)
        assert negative is None and (npe == 0).all() and (npp == 0).all()
        hs, positions = [], []
        for tok, te, key in encoders(plain):
            vecs = {Path(f).stem: files[Path(f).stem]["vec"][key] for f in emb_names}
            names = {k: v.shape[0] for k, v in vecs.items()}
            ids, fixes = a1111_ids(tok, prompt, names)
            out = a1111_encode(te, ids, fixes, vecs)
            hs.append(out.hidden_states[-2])
            positions.append(sorted(fixes))
            if key == "clip_g":
                pooled = out.text_embeds
        assert positions[0] == positions[1]
        diffs["prompt"] = float((torch.cat(hs, dim=-1) - pe).abs().max())
        diffs["pooled_prompt"] = float((pooled - pp).abs().max())
        diffs["prompt_positions"] = positions[0]
    return diffs


# ---------------------------------------------------------------------------
# misc
# ---------------------------------------------------------------------------

def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def sha_outside():
    return {str(p.relative_to(OUT_DIR)): sha256(p) for p in sorted(OUT_DIR.rglob("*"))
            if p.is_file() and EMB_DIR not in p.parents}


def trim_ids(ids, eos):
    """ids up to and including the first EOS (the rest is padding)."""
    return ids[:ids.index(eos) + 1]


# ---------------------------------------------------------------------------

def main():
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    torch.set_grad_enabled(False)
    transformers.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    assert (OUT_DIR / "tiny-sdxl" / "model_index.json").exists(), "run make_reference_more.py first"
    before = sha_outside()
    EMB_DIR.mkdir(exist_ok=True)

    files = write_files(load(SD15), load(SDXL))

    # The plain pipelines still give the existing fixtures.
    rerun = {}
    for cfg, neg, guidance, ref in ((SD15, base.NEGATIVE_PROMPT, base.GUIDANCE, "expected.png"),
                                    (SDXL, None, 5.0, "expected_sdxl_noneg.png")):
        img, _ = run(load(cfg), cfg, PROMPT, neg, guidance)
        d = np.abs(u8(img) - png_u8(OUT_DIR / ref))
        # one rounding-boundary value may land a level apart on another CPU (see make_reference_lora.py)
        assert d.max() <= 1 and (d > 0).sum() <= 3, f"plain run of {cfg['model_dir']} differs from {ref}"
        rerun[ref] = {"u8_max_abs": int(d.max()), "u8_values_differing": int((d > 0).sum())}

    cases = []
    for name, cfg, emb_files, prompt, negative in CASES:
        stems = [Path(f).stem for f in emb_files]

        # Without the embedding: the name is ordinary BPE text.
        plain_pipe = load(cfg)
        plain_img, plain_ids = run(plain_pipe, cfg, prompt, negative)

        pipe = load(cfg)
        vocab_before = [len(tok) for tok, _, _ in encoders(pipe)]
        for f in emb_files:
            diffusers_load(pipe, f)
        added, converted = [], []
        for k, (tok, te, key) in enumerate(encoders(pipe)):
            enc_added = {}
            for st in stems:
                vec = files[st]["vec"][key or "clip"]
                toks = [st] + [f"{st}_{i}" for i in range(1, vec.shape[0])]
                ids = [tok.convert_tokens_to_ids(t) for t in toks]
                assert ids == list(range(ids[0], ids[0] + len(ids))) and ids[0] >= vocab_before[k], ids
                assert f"{st}_{vec.shape[0]}" not in tok.get_vocab()
                w = te.get_input_embeddings().weight
                assert torch.equal(w[ids], vec), f"{name}: rows {ids} are not the file's vectors"
                enc_added[st] = dict(zip(toks, ids))
            added.append(enc_added)
            converted.append({"prompt": pipe.maybe_convert_prompt(prompt, tok),
                              "negative_prompt": (None if negative is None
                                                  else pipe.maybe_convert_prompt(negative, tok))})
        img, ids = run(pipe, cfg, prompt, negative)
        expected = f"expected_{name}.png"
        png = base.to_png(img, EMB_DIR / expected).astype(np.int16)
        mad = float(np.abs(png - u8(plain_img)).mean())

        # Token ids diffusers fed: per encoder [prompt, negative] (SDXL noneg: prompt only).
        n_calls = 1 if negative is None else 2
        token_ids = []
        for k, (tok, _, _) in enumerate(encoders(pipe)):
            assert len(ids[k]) == n_calls and len(plain_ids[k]) == n_calls, (name, len(ids[k]))
            ent = {"prompt_ids": ids[k][0], "negative_prompt_ids": ids[k][1] if n_calls == 2 else None,
                   "plain_prompt_ids": plain_ids[k][0],
                   "plain_negative_prompt_ids": plain_ids[k][1] if n_calls == 2 else None,
                   "added_tokens": added[k], "converted": converted[k]}
            # The expansion: the name is one word in the prompt; diffusers fed all n ids, in order,
            # once each, where the name stood.
            for label, text in (("prompt", prompt), ("negative_prompt", negative)):
                fed = ent[f"{label}_ids"]
                for st in stems:
                    want = list(added[k][st].values())
                    there = text is not None and st in text.replace(",", " ").split()
                    if there:
                        assert text.count(st) == 1
                        assert converted[k][label] == text.replace(st, " ".join(added[k][st])), converted[k]
                        j = fed.index(want[0])
                        assert fed[j:j + len(want)] == want, (name, label, fed)
                        assert sum(fed.count(i) for i in want) == len(want)
                    elif fed is not None:
                        assert not any(i in fed for i in want)
            token_ids.append(ent)
        a1111 = a1111_check(cfg, prompt, negative, files, emb_files)
        assert a1111["prompt"] < 1e-5 and a1111.get("negative_prompt", 0.0) < 1e-5, (name, a1111)
        assert a1111.get("pooled_prompt", 0.0) < 1e-5, (name, a1111)

        eos = encoders(pipe)[0][0].eos_token_id
        for k, ent in enumerate(token_ids):
            print(f"{name:>15} enc{k}: {ent['converted']['prompt']!r} | neg {ent['converted']['negative_prompt']!r}")
            print(f"{'':>15}       prompt ids {trim_ids(ent['prompt_ids'], eos)}"
                  + (f"\n{'':>15}       negative ids {trim_ids(ent['negative_prompt_ids'], eos)}"
                     if ent["negative_prompt_ids"] else ""))
        print(f"{name:>15}: mean|Δpixel| vs plain word {mad:.2f}/255   A1111-style max diff "
              f"{max(v for k, v in a1111.items() if not k.endswith('positions')):.2e}")
        assert mad > 3.0, f"{name}: the embedding barely changes the picture ({mad:.2f}/255)"

        sdxl = cfg is SDXL
        case = {
            "name": name, "model_dir": cfg["model_dir"], "pipeline": cfg["pipeline"],
            "sampler": "ddim", "eta": 0.0, "embeddings": emb_files,
            "prompt": prompt,
            "negative_prompt": "" if negative is None else negative,
            "steps": STEPS, "guidance_scale": GUIDANCE, "width": WIDTH, "height": HEIGHT,
            "noise": cfg["noise"], "expected": expected,
            "mean_abs_vs_plain_word": round(mad, 4),
        }
        if sdxl:
            case["diffusers_negative_prompt"] = None
            case["negative_embeddings"] = "zeros"
            case["notes"] = ("as sdxl_noneg in cases_more.json: diffusers got negative_prompt=None, so "
                             "(force_zeros_for_empty_prompt) the negative prompt_embeds and pooled embeds are "
                             "zeros and no negative text-encoder pass runs; Atelier's empty negative prompt "
                             "means the same. clip_l rows go to text_encoder/tokenizer, clip_g rows to "
                             "text_encoder_2/tokenizer_2, at the same positions")
            case["token_ids"] = {"tokenizer": token_ids[0], "tokenizer_2": token_ids[1]}
        else:
            case["token_ids"] = token_ids[0]
        case["a1111_style_check"] = a1111
        cases.append(case)

    file_doc = {}
    for st, f in files.items():
        p = EMB_DIR / f["file"]
        file_doc[f["file"]] = {
            "name": st, "model_dir": f["model_dir"], "format": f["format"], "tensors": f["tensors"],
            "vectors": f["vectors"], "hidden_size": f["hidden"],
            "row_norm": {k: round(v, 6) for k, v in f["row_norm_target"].items()},
            "seed": SEEDS[st], "sha256": sha256(p), "size": p.stat().st_size,
        }

    doc = {
        "description": "Textual-inversion reference cases for the tiny models; generated by "
                       "tests/reference/make_reference_embeddings.py. Paths: model_dir and noise relative to "
                       "tests/fixtures/reference, embedding files and expected PNGs relative to embeddings/. "
                       "The embedding's name is its file stem, used as a plain word in the prompt.",
        "how": "diffusers " + diffusers.__version__ + ": pipe.load_textual_inversion(path, token=<stem>) "
               "(SDXL: clip_g into text_encoder_2/tokenizer_2 and clip_l into text_encoder/tokenizer, "
               "token=<stem>, tensors passed directly); diffusers adds tokens NAME, NAME_1, ... NAME_{n-1} "
               "and rewrites the word NAME in the prompt to 'NAME NAME_1 ...', one position per vector",
        "png_quantisation": "uint8 = round(clamp(x/2+0.5, 0, 1) * 255)",
        "noise_usage": "as the existing cases: the noise tensor is passed as latents= (DDIM "
                       "init_noise_sigma 1); no RNG during sampling",
        "mean_abs_vs_plain_word_units": "uint8 levels (0..255): mean |expected - picture of the same prompt "
                                        "and negative with no embedding loaded (the name is then ordinary "
                                        "BPE text)| over all pixels and channels",
        "token_ids_note": "ids that reached the text encoder(s) (captured with a forward pre-hook), 77 "
                          "each: prompt_ids / negative_prompt_ids with the embedding loaded, "
                          "plain_*_ids without it. added_tokens: the tokens diffusers added and their ids "
                          "(rows of the resized token-embedding table = the file's vectors, checked). "
                          "converted: the prompt after diffusers' maybe_convert_prompt",
        "a1111_style_check_note": "max |diffusers' text-encoder output - A1111-style insertion| (plain "
                                  "pipeline; name's own BPE ids replaced by n placeholder positions, "
                                  "token-embedding output overwritten there); SD1: last_hidden_state, "
                                  "SDXL: concat of both hidden_states[-2] and te2 text_embeds. *_positions: "
                                  "the sequence positions (BOS = 0) holding the vectors",
        "plain_rerun_check": rerun,
        "cases": cases,
        "files": file_doc,
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "diffusers": diffusers.__version__, "transformers": transformers.__version__,
                     "numpy": np.__version__},
    }
    with open(EMB_DIR / "cases_embeddings.json", "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")

    after = sha_outside()
    assert after == before, "a fixture outside embeddings/ changed"

    total = 0
    for p in sorted(EMB_DIR.iterdir()):
        s = p.stat().st_size
        total += s
        print(f"{s:>9}  {p.relative_to(base.REPO_ROOT)}")
    print(f"{total:>9}  TOTAL")
    assert total < 500_000


if __name__ == "__main__":
    main()
