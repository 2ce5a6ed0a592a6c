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


def test_committed_tensors_equal_the_original_checkpoint():
    pytest.importorskip("distillmos")
    converter = _converter()
    original = converter.load_original_state_dict(converter.default_checkpoint())
    committed = load_file(ROOT / "model.safetensors")

    # every original tensor is there, bit for bit (the fused attention input projection split in three)
    for key, tensor in original.items():
        if key == converter.POSITION_TABLE_KEY:
            continue
        if key.endswith("self_attn.in_proj_weight") or key.endswith("self_attn.in_proj_bias"):
            layer = key.split("layers.")[1].split(".")[0]
            kind = key.rsplit("_", 1)[1]
            parts = [committed[f"encoder.layers.{layer}.attention.{p}_proj.{kind}"] for p in "qkv"]
            assert torch.equal(torch.cat(parts), tensor), key
        else:
            matches = [name for name, value in committed.items() if value.shape == tensor.shape and torch.equal(value, tensor)]
            assert matches, f"{key} has no identical tensor in model.safetensors"
    # and nothing else
    expected_count = len(original) - 1 + 2 * sum(k.endswith("in_proj_weight") or k.endswith("in_proj_bias") for k in original)
    assert len(committed) == expected_count
    assert torch.equal(committed["feature_encoder.conv_layers.5.conv.weight"], original["cnn.cnn.10.weight"])
    assert torch.equal(committed["pooling.readout.weight"], original["transformer_pool_attn.pool.linear3.weight"])


def test_converter_reproduces_the_committed_files(tmp_path):
    pytest.importorskip("distillmos")
    _converter().main(["--output-dir", str(tmp_path)])
    for name in ("config.json", "preprocessor_config.json"):
        ours, fresh = json.loads((ROOT / name).read_text()), json.loads((tmp_path / name).read_text())
        ours.pop("transformers_version", None)
        fresh.pop("transformers_version", None)
        assert ours == fresh, name
    committed, fresh = load_file(ROOT / "model.safetensors"), load_file(tmp_path / "model.safetensors")
    assert committed.keys() == fresh.keys()
    assert all(torch.equal(committed[k], fresh[k]) for k in committed)


def test_position_table_is_the_originals():
    pytest.importorskip("distillmos")
    from configuration_distillmos import DistillMOSConfig
    from modeling_distillmos import sinusoidal_position_table

    converter = _converter()
    original = converter.load_original_state_dict(converter.default_checkpoint())
    config = DistillMOSConfig()
    table = sinusoidal_position_table(config.max_position_embeddings, config.hidden_size, config.position_embedding_base)
    assert torch.equal(table, original[converter.POSITION_TABLE_KEY][0])
