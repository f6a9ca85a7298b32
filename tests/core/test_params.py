"""Parameter selection helpers on a real tiny model."""

from __future__ import annotations

import pytest
from transformers import AutoModelForCausalLM

from unlearn import ConfigError, decoder_layers, train_only
from unlearn.params import layer_index


def test_layers_and_selection(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert len(decoder_layers(model)) == model.config.num_hidden_layers == 2
    index = layer_index(model)
    assert index["model.layers.1.mlp.down_proj.weight"] == 1 and "lm_head.weight" not in index
    chosen = train_only(model, layers=[0], pattern=r"self_attn\.q_proj")
    assert chosen == ["model.layers.0.self_attn.q_proj.weight"]
    assert [n for n, p in model.named_parameters() if p.requires_grad] == chosen
    with pytest.raises(ConfigError, match=r"no parameter matches layers \[7\].*2 decoder layers"):
        train_only(model, layers=[7])
