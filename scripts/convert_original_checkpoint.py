#!/usr/bin/env python
"""
Converts the original Distill-MOS checkpoint (PyPI `distillmos` 0.9.1, `distillmos/weights/distill_mos_v7.pt`) into a
Hugging Face model repository: `config.json`, `preprocessor_config.json` and `model.safetensors`.

    python scripts/convert_original_checkpoint.py                 # from the installed distillmos package, into .
    python scripts/convert_original_checkpoint.py --checkpoint distill_mos_v7.pt --output-dir out/
"""

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from configuration_distillmos import DistillMOSConfig  # noqa: E402
from feature_extraction_distillmos import DistillMOSFeatureExtractor  # noqa: E402
from modeling_distillmos import DistillMOSModel, sinusoidal_position_table  # noqa: E402

REPOSITORY_FILES = ("config.json", "preprocessor_config.json", "model.safetensors")
CUSTOM_PIPELINES = {
    "speech-quality-assessment": {
        "impl": "pipeline_distillmos.DistillMOSPipeline",
        "pt": ["AutoModel"],
        "tf": [],
        "type": "audio",
    }
}

# Original name prefix -> our name prefix (longest prefixes first).
_RENAMES = [
    ("transformer_pool_attn.transformer.transformer_encoder.layers.", "encoder.layers."),
    ("transformer_pool_attn.transformer.linear_proj.", "encoder.projection."),
    ("transformer_pool_attn.transformer.norm.", "encoder.projection_norm."),
    ("transformer_pool_attn.norm_input.", "encoder.input_norm."),
    ("transformer_pool_attn.norm_trans.", "encoder.output_norm."),
    ("transformer_pool_attn.pool.linear1.", "pooling.attention_dense."),
    ("transformer_pool_attn.pool.linear2.", "pooling.attention_score."),
    ("transformer_pool_attn.pool.linear3.", "pooling.readout."),
]
_LAYER_RENAMES = [
    ("self_attn.out_proj.", "attention.out_proj."),
    ("linear1.", "feed_forward.intermediate_dense."),
    ("linear2.", "feed_forward.output_dense."),
    ("norm1.", "layer_norm."),
    ("norm2.", "final_layer_norm."),
]
POSITION_TABLE_KEY = "transformer_pool_attn.transformer.position_encoding.pe"
POSITION_EMBEDDINGS_KEY = "encoder.position_embeddings"


def default_checkpoint() -> Path:
    import distillmos.sqa

    return Path(distillmos.sqa.DEFAULT_WEIGHTS_CHKPT)


def load_original_state_dict(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return checkpoint["model"] if "model" in checkpoint else checkpoint


def convert_state_dict(original: dict[str, torch.Tensor], config: DistillMOSConfig) -> dict[str, torch.Tensor]:
    """
    Renames the original weights to ours; splits the fused attention input projection into q, k and v. Pure data
    movement: every output tensor holds exactly the bits of an original one.
    """
    converted = {}
    for key, tensor in original.items():
        if key == POSITION_TABLE_KEY:
            # Kept as stored (a buffer), never recomputed: sin/exp differ in the last bits between CPUs' maths
            # libraries, and the conversion must give the same file on every machine. The check only guards against
            # a config that describes another table (a tolerance, not bit equality, for the same reason).
            table = tensor[0]
            described = sinusoidal_position_table(
                config.max_position_embeddings, config.hidden_size, config.position_embedding_base
            )
            if table.shape != described.shape or not torch.allclose(table, described, rtol=0, atol=1e-4):
                raise ValueError("The checkpoint's position table differs from the one the config describes.")
            converted[POSITION_EMBEDDINGS_KEY] = table.clone()
            continue
        if key.startswith("cnn.cnn."):
            index, name = key[len("cnn.cnn.") :].split(".", 1)
            converted[f"feature_encoder.conv_layers.{int(index) // 2}.conv.{name}"] = tensor
            continue
        new_key = next((new + key[len(old) :] for old, new in _RENAMES if key.startswith(old)), None)
        if new_key is None:
            raise KeyError(f"Unexpected key in the original checkpoint: {key}")
        if new_key.startswith("encoder.layers."):
            layer, rest = new_key[len("encoder.layers.") :].split(".", 1)
            prefix = f"encoder.layers.{layer}."
            if rest.startswith("self_attn.in_proj_"):
                kind = rest.rsplit("_", 1)[1]  # weight or bias
                for projection, part in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0)):
                    converted[f"{prefix}attention.{projection}.{kind}"] = part.clone()
                continue
            rest = next((new + rest[len(old) :] for old, new in _LAYER_RENAMES if rest.startswith(old)), None)
            if rest is None:
                raise KeyError(f"Unexpected key in the original checkpoint: {key}")
            new_key = prefix + rest
        converted[new_key] = tensor
    return converted


def build_model(checkpoint: str | Path) -> tuple[DistillMOSModel, DistillMOSFeatureExtractor]:
    config = DistillMOSConfig()
    model = DistillMOSModel(config)
    model.load_state_dict(convert_state_dict(load_original_state_dict(checkpoint), config), strict=True)
    return model.eval(), DistillMOSFeatureExtractor()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="original .pt file (default: the installed distillmos package's)")
    parser.add_argument("--output-dir", type=Path, default=ROOT, help="where to write the repository files (default: .)")
    args = parser.parse_args(argv)

    checkpoint = args.checkpoint or default_checkpoint()
    model, feature_extractor = build_model(checkpoint)
    # `pipeline("speech-quality-assessment", model=repo, trust_remote_code=True)` finds its class here
    model.config.custom_pipelines = CUSTOM_PIPELINES
    DistillMOSConfig.register_for_auto_class()
    DistillMOSModel.register_for_auto_class("AutoModel")
    DistillMOSFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")

    # save_pretrained also copies the .py files; into the folder that holds them it would fail, so go via a temp dir.
    args.output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as staging:
        model.save_pretrained(staging)
        feature_extractor.save_pretrained(staging)
        for name in REPOSITORY_FILES:
            shutil.copyfile(Path(staging) / name, args.output_dir / name)
    print(f"Converted {checkpoint} -> {', '.join(str(args.output_dir / n) for n in REPOSITORY_FILES)}")


if __name__ == "__main__":
    main()
