"""The committed repository files are exactly what the converter makes from the original checkpoint."""

import importlib.util
import json

import pytest
import torch
from conftest import ROOT
from safetensors.torch import load_file


def _converter():
    spec = importlib.util.spec_from_file_location("convert", ROOT / "scripts" / "convert_original_checkpoint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _expected_name_mapping(original: dict[str, torch.Tensor]) -> dict[str, str]:
    """
    Our name for every original tensor, written out here independently of the converter's rename tables, so that a
    swapped or shifted mapping in the converter (e.g. linear1 <-> linear2, norm1 <-> norm2) fails this test.
    """
    top = {
        "transformer_pool_attn.transformer.linear_proj.": "encoder.projection.",
        "transformer_pool_attn.transformer.norm.": "encoder.projection_norm.",
        "transformer_pool_attn.norm_input.": "encoder.input_norm.",
        "transformer_pool_attn.norm_trans.": "encoder.output_norm.",
        "transformer_pool_attn.pool.linear1.": "pooling.attention_dense.",
        "transformer_pool_attn.pool.linear2.": "pooling.attention_score.",
        "transformer_pool_attn.pool.linear3.": "pooling.readout.",
    }
    in_layer = {
        "self_attn.out_proj.": "attention.out_proj.",
        "linear1.": "feed_forward.intermediate_dense.",
        "linear2.": "feed_forward.output_dense.",
        "norm1.": "layer_norm.",
        "norm2.": "final_layer_norm.",
    }
    mapping = {"transformer_pool_attn.transformer.position_encoding.pe": "encoder.position_embeddings"}
    for key in original:
        if key.startswith("cnn.cnn."):  # Sequential(conv, LeakyReLU, conv, ...): conv i sits at index 2 * i
            index, rest = key[len("cnn.cnn.") :].split(".", 1)
            mapping[key] = f"feature_encoder.conv_layers.{int(index) // 2}.conv.{rest}"
        elif key.startswith("transformer_pool_attn.transformer.transformer_encoder.layers."):
            layer, rest = key.split("layers.", 1)[1].split(".", 1)
            for old, new in in_layer.items():
                if rest.startswith(old):
                    mapping[key] = f"encoder.layers.{layer}.{new}{rest[len(old):]}"
        else:
            for old, new in top.items():
                if key.startswith(old):
                    mapping[key] = new + key[len(old) :]
    return mapping


def test_committed_tensors_equal_the_original_checkpoint():
    converter = _converter()
    original = converter.load_original_state_dict(converter.default_checkpoint())
    committed = load_file(ROOT / "model.safetensors")
    mapping = _expected_name_mapping(original)

    fused = [k for k in original if k.endswith("self_attn.in_proj_weight") or k.endswith("self_attn.in_proj_bias")]
    for key in fused:  # the fused attention input projection, split in three
        layer = key.split("layers.")[1].split(".")[0]
        kind = key.rsplit("_", 1)[1]
        parts = [committed[f"encoder.layers.{layer}.attention.{p}_proj.{kind}"] for p in "qkv"]
        assert torch.equal(torch.cat(parts), original[key]), key
    unmapped = sorted(set(original) - set(fused) - set(mapping))
    assert not unmapped, f"the test's mapping misses {unmapped}"
    for key, ours in mapping.items():
        # stored data is compared bit for bit: these are the original's bits, not recomputed numbers
        expected = original[key][0] if key.endswith("position_encoding.pe") else original[key]
        assert ours in committed, f"{key} -> {ours} is missing from model.safetensors"
        assert committed[ours].dtype == expected.dtype and torch.equal(committed[ours], expected), f"{key} -> {ours}"
    # and nothing else
    assert len(committed) == len(mapping) + 3 * len(fused)


def test_converter_reproduces_the_committed_files(tmp_path):
    """Deterministic on any CPU: the converter only moves stored tensors, so the files are equal bit for bit."""
    _converter().main(["--output-dir", str(tmp_path)])
    for name in ("config.json", "preprocessor_config.json"):
        ours, fresh = json.loads((ROOT / name).read_text()), json.loads((tmp_path / name).read_text())
        ours.pop("transformers_version", None)
        fresh.pop("transformers_version", None)
        assert ours == fresh, name
    committed, fresh = load_file(ROOT / "model.safetensors"), load_file(tmp_path / "model.safetensors")
    assert committed.keys() == fresh.keys()
    assert all(torch.equal(committed[k], fresh[k]) for k in committed)


def test_position_table_is_kept_not_recomputed():
    """
    The model adds the checkpoint's own table (a buffer in model.safetensors); recomputing it would make scores depend
    on the CPU's maths library (seen: 622 of 76,800 entries differ by up to 1.5e-5 between an AVX2 and an AVX-512 CPU).
    """
    from configuration_distillmos import DistillMOSConfig
    from modeling_distillmos import DistillMOSModel, sinusoidal_position_table

    converter = _converter()
    original = converter.load_original_state_dict(converter.default_checkpoint())[converter.POSITION_TABLE_KEY][0]
    model = DistillMOSModel.from_pretrained(ROOT)
    assert torch.equal(model.encoder.position_embeddings, original)
    # the config describes that table (to a tolerance: sin/exp are not bit-reproducible across CPUs)
    config = DistillMOSConfig()
    described = sinusoidal_position_table(config.max_position_embeddings, config.hidden_size, config.position_embedding_base)
    assert torch.allclose(described, original, rtol=0, atol=1e-4)
    # and the forward pass really uses the stored buffer, not a recomputed table
    audio = torch.sin(torch.linspace(0, 4000, 16000 * 2))[None] * 0.1
    with torch.inference_mode():
        before = model(audio).mos
        model.encoder.position_embeddings.zero_()
        after = model(audio).mos
    assert abs(float(before) - float(after)) > 1e-3


def test_converter_refuses_a_table_the_config_does_not_describe(tmp_path):
    converter = _converter()
    original = converter.load_original_state_dict(converter.default_checkpoint())
    from configuration_distillmos import DistillMOSConfig

    with pytest.raises(ValueError, match="position table differs"):
        converter.convert_state_dict(original, DistillMOSConfig(position_embedding_base=10000.0))
