"""Write tiny models in the *real-weights* folder layout, so the real loaders run offline in tests."""

from __future__ import annotations

import json
from pathlib import Path


def write_models_dir(root: Path) -> Path:
    """DIR/blip, DIR/sd, DIR/clip, DIR/head from the tiny models (same weights as --models tiny)."""
    import torch
    from diffusers import PNDMScheduler, StableDiffusionPipeline
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer

    from semgir_engine.semgir import configs
    from semgir_engine.semgir.models import SD_SCHEDULER_CONFIG, Captioner, Embedder, Regenerator, SemgirHead
    from semgir_engine.semgir.sources import ModelSource

    src = ModelSource.parse("tiny")
    cap = Captioner.build(src)
    cap.model.save_pretrained(root / "blip")
    cap.tokenizer.save_pretrained(root / "blip")

    # a CLIPTokenizer built from open_clip's bundled BPE vocabulary (the same one SD v1.5 ships)
    st = SimpleTokenizer()
    tok_dir = root / "tok"
    tok_dir.mkdir(parents=True)
    names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}  # HF spelling
    (tok_dir / "vocab.json").write_text(json.dumps({names.get(k, k): v for k, v in st.encoder.items()}))
    merges = sorted(st.bpe_ranks, key=st.bpe_ranks.get)
    (tok_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), pad_token="<|endoftext|>")

    r = Regenerator.build(src)
    pipe = StableDiffusionPipeline(vae=r.vae, text_encoder=r.text_encoder, tokenizer=tokenizer, unet=r.unet,
                                   scheduler=PNDMScheduler.from_config(SD_SCHEDULER_CONFIG),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(root / "sd")

    emb = Embedder.build(src)
    (root / "clip").mkdir()
    torch.save(emb.model.state_dict(), root / "clip" / "open_clip_pytorch_model.bin")
    c = configs.CLIP["tiny"]
    (root / "clip" / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": {"embed_dim": c["embed_dim"], "vision_cfg": dict(c["vision_cfg"], layers=list(c["vision_cfg"]["layers"])),
                       "text_cfg": c["text_cfg"]}}))

    head, _ = SemgirHead.build(src, emb.dim)
    (root / "head").mkdir()
    torch.save({"state_dict": head.state_dict(), "manifest": {"hidden": head.hidden, "threshold": 0.5,
                                                              "version": "tiny-as-real"}},
               root / "head" / "semgir_head.pt")
    return root
