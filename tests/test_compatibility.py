"""The settings a saved stage must share with the run that resumes or reuses it."""
from __future__ import annotations

import dataclasses

from modules.config.compatibility import must_match, reused_vae_must_match, saved_with_defaults
from modules.config.schema import (ConditionerConfig, EndToEndConfig, ModelConfig, RunConfig, TrainConfig,
                                   config_from_dict)
from modules.storage.state_files import differing_keys


def with_train(**changes) -> RunConfig:
    return RunConfig(train=dataclasses.replace(TrainConfig(), **changes))


def test_the_schedule_binds_both_stages_and_where_or_how_often_a_run_writes_binds_neither():
    base = RunConfig()
    for stage in ("vae", "conditioner"):
        assert differing_keys(must_match(base, stage), must_match(with_train(lr_schedule="constant"), stage)) == \
            ["train.lr_schedule: saved 'cosine', now 'constant'"]
        for free in (dict(device="cpu"), dict(checkpoint_every=5), dict(keep_checkpoints=3), dict(amp=False)):
            assert differing_keys(must_match(base, stage), must_match(with_train(**free), stage)) == [], (stage, free)


def test_the_vae_is_bound_by_its_window_and_split_the_conditioner_by_its_own_settings():
    base = RunConfig()
    other_split = dataclasses.replace(base, data=dataclasses.replace(base.data, split_seed=3))
    assert differing_keys(must_match(base, "vae"), must_match(other_split, "vae")) == \
        ["data.split_seed: saved 0, now 3"]
    other_lc = dataclasses.replace(base, conditioner=dataclasses.replace(base.conditioner, epochs=7))
    assert differing_keys(must_match(base, "conditioner"), must_match(other_lc, "conditioner")) == \
        ["conditioner.epochs: saved 200, now 7"]
    assert must_match(base, "vae")["model"] == must_match(base, "conditioner")["model"]


def test_a_checkpoint_written_before_a_setting_existed_matches_its_default_and_only_that():
    fresh = RunConfig(end_to_end=EndToEndConfig(enabled=True, finetune_decoder=True, decoder_start="fresh"))
    three = dataclasses.replace(fresh, conditioner=ConditionerConfig(ensemble_members=3))
    saved = must_match(fresh, "conditioner")
    del saved["conditioner"]["ensemble_members"]  # as written before conditioner_ensemble existed
    current = must_match(fresh, "conditioner")
    assert differing_keys(saved, current) == ["conditioner.ensemble_members: saved '<missing>', now 1"]
    assert differing_keys(saved_with_defaults(saved, "conditioner"), current) == []
    assert differing_keys(saved_with_defaults(saved, "conditioner"), must_match(three, "conditioner")) == \
        ["conditioner.ensemble_members: saved 1, now 3"]


def test_refinement_iterations_bind_no_stage_even_in_checkpoints_that_saved_them():
    before = RunConfig(model=dataclasses.replace(RunConfig().model, refine_steps=100))
    now = RunConfig(model=dataclasses.replace(RunConfig().model, refine_steps=50))
    other_width = RunConfig(model=dataclasses.replace(RunConfig().model, decoder_width=64))
    for stage in ("vae", "conditioner"):
        assert differing_keys(must_match(before, stage), must_match(now, stage)) == []
        written_then = must_match(before, stage)
        written_then["model"]["refine_steps"] = 100  # as checkpoints of earlier versions hold it
        assert differing_keys(saved_with_defaults(written_then, stage), must_match(now, stage)) == []
        assert differing_keys(saved_with_defaults(written_then, stage), must_match(other_width, stage)) == \
            [f"model.decoder_width: saved {RunConfig().model.decoder_width}, now 64"]


def with_design(design_prior: str, input_type: str) -> RunConfig:
    return RunConfig(model=dataclasses.replace(RunConfig().model, design_prior=design_prior),
                     conditioner=dataclasses.replace(ConditionerConfig(), input_type=input_type))


def test_design_prior_auto_is_on_for_a_parameter_table_and_off_for_design_images():
    assert with_design("auto", "csv").uses_design_prior and not with_design("auto", "image").uses_design_prior
    assert with_design("1", "image").uses_design_prior and not with_design("0", "csv").uses_design_prior
    assert [found.key for found in with_design("yes", "csv").model.problems()] == ["design_prior"]


def test_checkpoints_that_saved_design_prior_as_a_flag_match_what_auto_resolves_to():
    for stage in ("vae", "conditioner"):
        written_then = must_match(RunConfig(), stage)
        written_then["model"]["design_prior"] = True  # a 0/1 flag before 'auto', saved as a bool
        assert differing_keys(saved_with_defaults(written_then, stage), must_match(with_design("auto", "csv"), stage)) \
            == []
        # a VAE trained with the prior on images is not resumed without it: its network has the prior's layers
        assert differing_keys(saved_with_defaults(written_then, stage)["model"],
                              must_match(with_design("auto", "image"), stage)["model"]) == \
            ["design_prior: saved True, now False"]


def test_a_bundle_that_saved_the_flag_loads_as_its_value_and_a_reused_vae_may_differ_in_it():
    saved = RunConfig().to_dict()
    saved["model"]["design_prior"] = False
    assert config_from_dict(saved).model.design_prior == "0" and ModelConfig(design_prior=True).design_prior == "1"
    trained_on_parameters = with_design("auto", "csv")
    images = with_design("auto", "image")
    assert differing_keys(reused_vae_must_match(trained_on_parameters), reused_vae_must_match(images)) == []
    wider = RunConfig(model=dataclasses.replace(RunConfig().model, decoder_width=64))
    assert differing_keys(reused_vae_must_match(trained_on_parameters), reused_vae_must_match(wider)) == \
        [f"decoder_width: saved {RunConfig().model.decoder_width}, now 64"]
