"""The end-to-end model: fine-tuning the decoder keeps frozen what the VAE's design freezes."""
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

NODES, TIMESTEPS, DESIGNS, PARAMS = 12, 8, 16, 3


def end_to_end_trainer(tmp_path, finetune_decoder: bool):
    torch.manual_seed(0)
    vae = HierarchicalVAE(ModelConfig(encoder_filters=(8, 4), latent_dim_main=3, latent_dim_hier=2), NODES, TIMESTEPS)
    conditioner = build_conditioner(ConditionerConfig(num_params=PARAMS, filters=(16,)), 3, 2, vae.num_hier_levels)
    model = ConditionedDecoder(conditioner, vae, finetune_decoder)
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
    fields = 0.5 * torch.tanh(torch.randn(DESIGNS, NODES, TIMESTEPS, generator=generator))
    return TensorDataset(inputs[:12], targets[:12], fields[:12]), TensorDataset(inputs[12:], targets[12:], fields[12:])


def test_finetuning_the_decoder_leaves_the_frozen_linear_path_bit_identical(tmp_path):
    vae, trainer = end_to_end_trainer(tmp_path, finetune_decoder=True)
    frozen = {id(parameter) for parameter in vae.linear_path_parameters()}
    assert frozen, "the VAE of this test must have a linear path"
    before = {name: parameter.detach().clone() for name, parameter in vae.named_parameters()}
    optimised = {id(parameter) for group in trainer.optimizer.param_groups for parameter in group["params"]}
    assert not optimised & frozen
    assert all(parameter.requires_grad for parameter in trainer.model.parameters() if id(parameter) in optimised)

    trainer.fit(*designs_and_fields())

    moved, unchanged = [], []
    for name, parameter in vae.named_parameters():
        (unchanged if torch.equal(parameter, before[name]) else moved).append(name)
        if id(parameter) in frozen:
            assert torch.equal(parameter, before[name]), f"{name} is a frozen PCA basis and changed"
            assert not parameter.requires_grad, name
    assert any(name.startswith("decoder.") for name in moved), "the rest of the decoder was fine-tuned"
    assert not any(name.startswith("encoder.") for name in moved)


def test_a_frozen_decoder_trains_only_the_conditioner(tmp_path):
    vae, trainer = end_to_end_trainer(tmp_path, finetune_decoder=False)
    assert not any(parameter.requires_grad for parameter in vae.parameters())
    optimised = {id(parameter) for group in trainer.optimizer.param_groups for parameter in group["params"]}
    assert optimised == {id(parameter) for parameter in trainer.model.conditioner.parameters()}
