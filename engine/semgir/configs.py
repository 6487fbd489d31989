"""Architecture configs (data, no code): tiny for tests, full size = the released models."""

from __future__ import annotations

from dataclasses import dataclass

#: OpenAI CLIP normalisation, used by BLIP and CLIP alike.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# --- BLIP (captioner) ----------------------------------------------------------------------
# Full size: BlipConfig() defaults equal Salesforce/blip-image-captioning-base; the vision
# initializer_range is raised from 1e-10 so that random weights depend on the input.
BLIP = {
    "full": {
        "vision_config": {"initializer_range": 0.02},
        # raised from 0.02 so that random-weight captions depend on the image (timing and parity)
        "text_config": {"initializer_range": 0.1},
        "image_size": 384,
        "vocab": {"size": 30524, "pad": 0, "unk": 100, "cls": 101, "sep": 102, "mask": 103, "dec": 30522},
    },
    "tiny": {
        "vision_config": {
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "image_size": 32, "patch_size": 8, "initializer_range": 0.02, "projection_dim": 32,
        },
        "text_config": {
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "max_position_embeddings": 64, "encoder_hidden_size": 32, "projection_dim": 32,
            "initializer_range": 0.1,
        },
        "image_size": 32,
        "vocab": {"size": 200, "pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4, "dec": 5},
    },
}

# --- Stable Diffusion v1.5 (regenerator) ----------------------------------------------------
SD_TEXT = {
    "full": dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                 num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                 projection_dim=768),
    "tiny": dict(vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                 num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu",
                 projection_dim=32),
}
SD_UNET = {
    "full": dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
                 down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                   "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")),
    "tiny": dict(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
                 block_out_channels=(32, 64), cross_attention_dim=32, attention_head_dim=8,
                 norm_num_groups=32,
                 down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
}
SD_VAE = {
    "full": dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
                 block_out_channels=(128, 256, 512, 512), scaling_factor=0.18215,
                 down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4),
    "tiny": dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, sample_size=32,
                 block_out_channels=(32, 32), norm_num_groups=32, scaling_factor=0.18215,
                 down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2),
}
#: default output resolution of the regenerator per size
SD_RESOLUTION = {"full": 512, "tiny": 32}

# --- CLIP RN50x4 (embedder) -----------------------------------------------------------------
CLIP = {
    "full": {"open_clip_name": "RN50x4-quickgelu", "image_size": 288, "embed_dim": 640},  # OpenAI weights use QuickGELU
    "tiny": {
        "embed_dim": 32, "image_size": 64,
        "vision_cfg": dict(layers=(1, 1, 1, 1), width=8, head_width=64, image_size=64),
        "text_cfg": dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1),
    },
}

# --- SemGIR head --------------------------------------------------------------------------------
HEAD = {"full": {"hidden": 640}, "tiny": {"hidden": 32}}


@dataclass(frozen=True)
class Dims:
    """Sizes that specs and sample inputs need, per model size."""

    blip_image: int
    blip_hidden: int
    blip_vocab: int
    sd_hidden: int
    unet_sample: int
    vae_scale: int
    sd_resolution: int
    clip_image: int
    clip_dim: int
    head_hidden: int


def dims(size: str) -> Dims:
    key = "tiny" if size == "tiny" else "full"
    blip_hidden = BLIP[key]["vision_config"].get("hidden_size", 768)
    vae_scale = 2 ** (len(SD_VAE[key]["block_out_channels"]) - 1)
    return Dims(
        blip_image=BLIP[key]["image_size"], blip_hidden=blip_hidden, blip_vocab=BLIP[key]["vocab"]["size"],
        sd_hidden=SD_TEXT[key]["hidden_size"], unet_sample=SD_RESOLUTION[key] // vae_scale, vae_scale=vae_scale,
        sd_resolution=SD_RESOLUTION[key], clip_image=CLIP[key]["image_size"], clip_dim=CLIP[key]["embed_dim"],
        head_hidden=HEAD[key]["hidden"],
    )
