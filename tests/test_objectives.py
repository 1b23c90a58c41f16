"""The end-to-end model: fine-tuning the decoder keeps frozen what is off the design -> field path."""
from __future__ import annotations

import io

import torch
from torch.utils.data import TensorDataset

from modules.config.schema import ConditionerConfig, EndToEndConfig, ModelConfig
from modules.models.conditioners import build_conditioner
from modules.models.vae import HierarchicalVAE
from modules.runtime.distributed import Runtime
from modules.training.checkpointing import Checkpointer, CheckpointPaths
from modules.training.loop import LoopSettings, Trainer
from modules.training.objectives import ConditionedDecoder, EndToEndObjective
from modules.training.run_log import RunLog

NODES, TIMESTEPS, MODES, DESIGNS, PARAMS = 12, 8, 5, 16, 3


def end_to_end_trainer(tmp_path, finetune_decoder: bool, fresh_decoder: bool = False):
    torch.manual_seed(0)
    vae = HierarchicalVAE(ModelConfig(encoder_filters=(8, 4), latent_dim_main=3, latent_dim_hier=2, decoder_width=16),
                          NODES, TIMESTEPS, MODES, design_features=PARAMS)
    conditioner = build_conditioner(ConditionerConfig(num_params=PARAMS, filters=(16,)), 3, 2, vae.num_hier_levels)
    model = ConditionedDecoder(conditioner, vae, finetune_decoder, fresh_decoder=fresh_decoder)
    settings = LoopSettings(name="conditioner", epochs=2, batch_size=4, learning_rate=0.05, weight_decay=0.1,
                            grad_clip=5.0, lr_schedule="constant", min_lr_fraction=1.0, early_stopping_patience=0,
                            checkpoint_every=1, seed=0)
    runtime = Runtime(device=torch.device("cpu"))
    log = RunLog(tmp_path / "log.txt", None, show_progress=False, stream=io.StringIO())
    checkpoints = Checkpointer(CheckpointPaths(last=tmp_path / "last.pt", best=tmp_path / "best.pt"), runtime,
                               "conditioner", must_match={}, config_snapshot={})
    return vae, Trainer(model, EndToEndObjective(EndToEndConfig()), settings, runtime, log, checkpoints)


def designs_and_fields():
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(DESIGNS, PARAMS, generator=generator)
    targets = torch.randn(DESIGNS, 3 + 2, generator=generator)
    coefficients = torch.randn(DESIGNS, MODES, TIMESTEPS, generator=generator)
    return (TensorDataset(inputs[:12], targets[:12], coefficients[:12]),
            TensorDataset(inputs[12:], targets[12:], coefficients[12:]))


def test_finetuning_the_decoder_leaves_what_is_off_the_design_to_field_path_bit_identical(tmp_path):
    vae, trainer = end_to_end_trainer(tmp_path, finetune_decoder=True)
    # The encoder and the design prior never see a design in this model; the prior and posterior heads are
    # skipped by decode_flat, which is given every level's latent.
    off_path = ("encoder.", "design_prior.", "decoder.prior_heads.", "decoder.posterior_heads.")
    frozen = {id(parameter) for name, parameter in vae.named_parameters() if name.startswith(off_path)}
    before = {name: value.detach().clone() for name, value in vae.state_dict().items()}
    optimised = {id(parameter) for group in trainer.optimizer.param_groups for parameter in group["params"]}
    assert frozen and not optimised & frozen
    assert all(parameter.requires_grad for parameter in trainer.model.parameters() if id(parameter) in optimised)

    trainer.fit(*designs_and_fields())

    after = vae.state_dict()
    moved = [name for name in before if not torch.equal(after[name], before[name])]
    assert any(name.startswith("decoder.readout.") for name in moved), "the decoder was fine-tuned"
    assert not [name for name in moved if name.startswith(off_path + ("basis.",))], moved
    assert not any(parameter.requires_grad for name, parameter in vae.named_parameters() if name.startswith(off_path))


def test_a_fresh_prediction_decoder_is_reinitialised_on_the_latent_to_field_path_only(tmp_path):
    torch.manual_seed(0)
    reference = HierarchicalVAE(ModelConfig(encoder_filters=(8, 4), latent_dim_main=3, latent_dim_hier=2,
                                            decoder_width=16), NODES, TIMESTEPS, MODES, design_features=PARAMS)
    vae, trainer = end_to_end_trainer(tmp_path, finetune_decoder=True, fresh_decoder=True)
    before = reference.state_dict()
    after = vae.state_dict()
    kept = ("encoder.", "design_prior.", "decoder.prior_heads.", "decoder.posterior_heads.", "basis.")
    # Same seed, same construction: whatever differs was re-drawn by the fresh start.
    assert all(torch.equal(after[name], before[name]) for name in before if name.startswith(kept))
    redrawn = [name for name in before if name.startswith(("decoder.start.", "decoder.merges.", "decoder.readout."))
               and name.endswith("weight")]
    assert redrawn and all(not torch.equal(after[name], before[name]) for name in redrawn)
    optimised = {id(parameter) for group in trainer.optimizer.param_groups for parameter in group["params"]}
    assert {id(parameter) for parameter in vae.decoder.readout.parameters()} <= optimised


def test_a_fresh_decoder_that_would_stay_frozen_is_refused():
    import pytest

    vae = HierarchicalVAE(ModelConfig(encoder_filters=(8, 4), latent_dim_main=3, latent_dim_hier=2, decoder_width=16),
                          NODES, TIMESTEPS, MODES)
    conditioner = build_conditioner(ConditionerConfig(num_params=PARAMS, filters=(16,)), 3, 2, vae.num_hier_levels)
    with pytest.raises(ValueError, match="must be trained"):
        ConditionedDecoder(conditioner, vae, finetune_decoder=False, fresh_decoder=True)


def test_a_frozen_decoder_trains_only_the_conditioner(tmp_path):
    vae, trainer = end_to_end_trainer(tmp_path, finetune_decoder=False)
    assert not any(parameter.requires_grad for parameter in vae.parameters())
    optimised = {id(parameter) for group in trainer.optimizer.param_groups for parameter in group["params"]}
    assert optimised == {id(parameter) for parameter in trainer.model.conditioner.parameters()}


def test_a_conditioner_on_the_design_prior_starts_at_the_vaes_own_prediction():
    from modules.surrogate.conditioner_bundle import predict_latents
    from modules.training.conditioner_stage import starts_on_design_prior, zero_output_heads

    torch.manual_seed(0)
    vae = HierarchicalVAE(ModelConfig(encoder_filters=(8, 4), latent_dim_main=3, latent_dim_hier=2, decoder_width=16),
                          NODES, TIMESTEPS, MODES, design_features=PARAMS).eval()
    conditioner = build_conditioner(ConditionerConfig(num_params=PARAMS, filters=(16,)), 3, 2, vae.num_hier_levels)
    designs = torch.randn(5, PARAMS)
    assert starts_on_design_prior(vae, designs) and not starts_on_design_prior(vae, torch.randn(5, PARAMS + 1))
    assert not starts_on_design_prior(vae, designs, fresh_decoder=True)  # a new decoder: the prior's code means nothing
    zero_output_heads(conditioner)
    with torch.no_grad():
        expected = vae.design_latent(designs)
        assert torch.allclose(predict_latents(conditioner, designs, torch.device("cpu"), prior=vae), expected)
        flat, coefficients = ConditionedDecoder(conditioner, vae, False, on_design_prior=True).eval()(designs)
        assert torch.allclose(flat, expected) and torch.allclose(coefficients, vae.decode_flat(expected, projected=True))
    # A trained correction moves the prediction away from the prior's.
    with torch.no_grad():
        conditioner.heads.main_head.bias.fill_(0.5)
    assert not torch.allclose(predict_latents(conditioner, designs, torch.device("cpu"), prior=vae), expected)
