"""preset.txt / condition.txt parsing: the legacy fixtures, and every broken variant's message."""
from __future__ import annotations

from pathlib import Path

import pytest

from modules.config.legacy_files import load_run_config
from modules.errors import ConfigError
from legacy_fixture import as_the_legacy_tool_ships_it, edit, legacy_copy

REPO = Path(__file__).resolve().parents[1]


def line_of(path: Path, fragment: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if fragment in line:
            return number
    raise AssertionError(fragment)


def problems(preset: Path, condition: Path, **kwargs) -> str:
    with pytest.raises(ConfigError) as caught:
        load_run_config(preset, condition, **kwargs)
    return str(caught.value)


def test_legacy_fixture_parses_to_the_values_written(tmp_path):
    preset, condition = legacy_copy(tmp_path)
    config, notices = load_run_config(preset, condition)
    assert (config.data.num_cases, config.data.num_timesteps, config.data.num_nodes) == (360, 120, 48210)
    assert (config.data.num_timesteps_used, config.data.node_start, config.data.node_end) == (100, 10, 48000)
    assert config.data.data_number == 3
    assert config.model.encoder_filters == (512, 256, 128, 64)
    assert config.conditioner.filters == (16, 32, 64, 128, 256)
    assert (config.model.latent_dim_main, config.model.latent_dim_hier) == (32, 8)
    assert config.train.loss_type == 3 and config.train.recon_weight == 100000
    assert config.train.learning_rate == pytest.approx(0.0005)
    assert config.train.init_beta_divisor == 2
    assert config.conditioner.input_type == "csv"  # legacy spelling 'csvs'
    assert config.conditioner.learning_rate == pytest.approx(0.0008)  # value before an inline comment
    assert config.end_to_end.loss_function == "SmoothL1" and config.end_to_end.recon_weight == 500
    assert config.end_to_end.vae_model_path == "model_save/SimulGen-VAE"
    # the fixture's window leaves part of the sweep untrained: said, with the lines that do it
    assert notices == [
        f"{condition}:{line_of(condition, 'Dim2_red')}: Dim2_red 100 trains on the first 100 of the 120 timesteps "
        f"(Dim2); the last 20 are not used (delete the line to use them all, or add Dim2_red_mode spread to keep "
        f"100 spread over the whole transient)",
        f"{condition}:{line_of(condition, 'Dim3_start')}, {condition}:{line_of(condition, 'Dim3_end')}: "
        f"Dim3_start/Dim3_end keep nodes 10..47999 of the 48210 (Dim3); 220 nodes are not used (delete the lines "
        f"to use them all)"]


def test_dim2_red_mode_spread_keeps_steps_over_the_whole_transient_and_says_which(tmp_path):
    preset, condition = legacy_copy(tmp_path)
    edit(condition, "Dim2_red\t\t100", "Dim2_red\t\t100\nDim2_red_mode spread")
    config, notices = load_run_config(preset, condition)
    steps = config.data.timestep_indices
    assert len(steps) == 100 and steps[0] == 0 and steps[-1] == 119 and len(set(steps)) == 100
    assert steps[:4] == (0, 1, 2, 4)  # 119 / 99 = 1.2 apart, rounded
    assert (f"{condition}:{line_of(condition, 'Dim2_red')}, {condition}:{line_of(condition, 'Dim2_red_mode')}: "
            f"Dim2_red 100 with Dim2_red_mode spread trains on 100 of the 120 timesteps (Dim2), spread over the whole "
            f"transient: stored steps 0, 1, 2, 4, ..., 119 (0-based)") in notices


def test_the_new_keys_of_the_seed_features_are_read_and_checked(tmp_path):
    preset, condition = legacy_copy(tmp_path)
    edit(condition, "num_var 1", "num_var 1\nscaler robust\nrobust_clip 8\ncache_cases 12\ngrad_accumulation_steps 4\n"
         "memory_warning_fraction 0.2\naug_image_noise_probability 0.5\naug_image_blur_sigma 0.8")
    config, _ = load_run_config(preset, condition)
    assert (config.data.scaler, config.data.robust_clip, config.data.cache_cases) == ("robust", 8.0, 12)
    assert (config.train.grad_accumulation_steps, config.train.memory_warning_fraction) == (4, 0.2)
    assert (config.augmentation.image_noise_probability, config.augmentation.image_blur_sigma) == (0.5, 0.8)
    edit(condition, "scaler robust", "scaler median")
    edit(condition, "grad_accumulation_steps 4", "grad_accumulation_steps 0")
    edit(condition, "Dim2_red", "Dim2_red_mode last\nDim2_red")
    found = problems(preset, condition)
    assert (f"{condition}:{line_of(condition, 'scaler')}, key 'scaler': must be minmax or robust, got 'median'\n"
            f"    fix: use minmax") in found
    assert "key 'grad_accumulation_steps': must be 1 or more, got 0" in found
    assert "key 'Dim2_red_mode': must be first or spread, got 'last'" in found


def test_the_training_time_budget_is_off_without_its_key_and_read_and_checked_with_it(tmp_path):
    preset, condition = legacy_copy(tmp_path)
    config, _ = load_run_config(preset, condition)
    assert config.train.training_minutes == 0.0  # a legacy file trains every configured epoch, as it always did
    shipped, _ = load_run_config(REPO / "preset.txt", REPO / "input_data" / "condition.txt")
    assert shipped.train.training_minutes == 15.0
    edit(condition, "num_var 1", "num_var 1\ntraining_minutes -5")
    assert (f"{condition}:{line_of(condition, 'training_minutes')}, key 'training_minutes': must be 0 (no budget) or "
            f"a positive number of minutes, got -5.0\n    fix: use e.g. 15, or 0 to run every configured epoch") \
        in problems(preset, condition)


def test_the_legacy_image_condition_file_with_num_param_0_is_accepted(tmp_path):
    preset, condition = legacy_copy(tmp_path)
    as_the_legacy_tool_ships_it(condition)
    config, _ = load_run_config(preset, condition)
    assert config.conditioner.input_type == "image" and config.conditioner.num_params == 0
    assert config.end_to_end.enabled and config.conditioner.use_spatial_attention


def test_fine_tuning_the_decoder_without_end_to_end_training_is_announced(tmp_path):
    preset, condition = legacy_copy(tmp_path)
    edit(condition, "LC_alpha    500", "LC_alpha    500\ne2e_finetune_decoder\t1")
    _, notices = load_run_config(preset, condition)
    assert (f"{condition}:{line_of(condition, 'e2e_finetune_decoder')}: e2e_finetune_decoder 1 has no effect without "
            f"use_e2e_training 1 (the decoder is fine-tuned only by end-to-end training)") in notices


def test_a_case_cache_without_streamed_field_training_is_announced(tmp_path):
    preset, condition = legacy_copy(tmp_path)  # Loss_type 3: the VAE trains on the full fields
    edit(condition, "LC_alpha    500", "LC_alpha    500\ncache_cases\t50")
    streamed = {"data.load_all": ("--load_all", False)}
    config, notices = load_run_config(preset, condition, cli_values=streamed)
    assert not config.trains_on_coefficients and not any("cache_cases" in notice for notice in notices)
    _, notices = load_run_config(preset, condition, cli_values={"data.load_all": ("--load_all", True)})
    assert (f"{condition}:{line_of(condition, 'cache_cases')}: cache_cases 50 has no effect: --load_all=1 keeps every "
            f"case in memory already") in notices
    edit(condition, "Loss_type\t3", "Loss_type\t1")
    config, notices = load_run_config(preset, condition, cli_values=streamed)
    assert config.trains_on_coefficients
    assert (f"{condition}:{line_of(condition, 'cache_cases')}: cache_cases 50 has no effect: the VAE trains on "
            f"spatial-mode coefficients, and the sweep is read once to compute them; the cache serves VAE training "
            f"on the full fields (pod_projected_training 0)") in notices


def test_plot_variable_must_name_one_of_the_variables(tmp_path):
    preset, condition = legacy_copy(tmp_path)
    edit(condition, "num_var 1", "num_var 2\nplot_variable 2")
    assert (f"{condition}:{line_of(condition, 'plot_variable')}, key 'plot_variable': must be in 0..1 (num_var 2), "
            f"got 2\n    fix: choose a variable by its 0-based position on the variable axis") in problems(preset, condition)


def test_csv_designs_still_need_a_positive_num_param(tmp_path):
    preset, condition = legacy_copy(tmp_path)
    edit(condition, "num_param\t5", "num_param\t0")
    assert (f"{condition}:{line_of(condition, 'num_param')}, key 'num_param': must be positive for CSV designs "
            f"(input_type csvs), got 0\n    fix: set num_param to the CSV column count") in problems(preset, condition)


def test_repo_demo_files_parse(tmp_path):
    config, _ = load_run_config(REPO / "preset.txt", REPO / "input_data" / "condition.txt")
    assert config.data.generate_demo
    assert config.data.nodes == config.data.num_nodes


def test_windows_line_endings_and_bom_simply_work(tmp_path):
    preset, condition = legacy_copy(tmp_path)
    for path in (preset, condition):
        path.write_bytes(b"\xef\xbb\xbf" + path.read_text().replace("\n", "\r\n").encode())
    config, _ = load_run_config(preset, condition)
    assert config.data.num_nodes == 48210 and config.model.encoder_filters == (512, 256, 128, 64)


def test_all_problems_are_reported_together_with_file_line_key_and_fix(tmp_path):
    preset, condition = legacy_copy(tmp_path)
    edit(condition, "Batch_size\t8", "Batch_size\t0")
    edit(condition, "LearningR\t0.0005", "LearningR\t2")
    edit(condition, "Loss_type\t3", "Loss_type\t7")
    message = problems(preset, condition)
    assert message.startswith("3 configuration problems found:")
    assert f"{condition}:{line_of(condition, 'Batch_size')}, key 'Batch_size': must be positive, got 0" in message
    assert f"{condition}:{line_of(condition, 'LearningR')}, key 'LearningR': must be in (0, 1], got 2.0" in message
    assert "key 'Loss_type': must be 1, 2, 3 or 4, got 7" in message
    assert "fix: use 1 (MSE), 2 (MAE), 3 (SmoothL1) or 4 (Huber)" in message


def test_window_rules(tmp_path):
    preset, condition = legacy_copy(tmp_path)
    edit(condition, "Dim2_red\t\t100", "Dim2_red\t\t130")
    edit(condition, "Dim3_end\t\t48000", "Dim3_end\t\t50000")
    message = problems(preset, condition)
    assert "key 'Dim2_red': must be in 1..120 (Dim2), got 130" in message
    assert "fix: make Dim2_red at most Dim2" in message
    assert "key 'Dim3_end': must be <= Dim3 (48210), got 50000" in message


def test_start_not_below_end(tmp_path):
    preset, condition = legacy_copy(tmp_path)
    edit(condition, "Dim3_start      10", "Dim3_start      48000")
    assert "key 'Dim3_start': must be < Dim3_end (48000), got 48000" in problems(preset, condition)


def test_unknown_key_names_the_closest_known_key(tmp_path):
    preset, condition = legacy_copy(tmp_path)
    edit(condition, "Batch_size\t8", "Batch_sise\t8")
    message = problems(preset, condition)
    assert f"{condition}:{line_of(condition, 'Batch_sise')}, key 'Batch_sise': unknown key" in message
    assert "did you mean 'Batch_size'?" in message


def test_wrong_type_and_duplicate_and_missing_key(tmp_path):
    preset, condition = legacy_copy(tmp_path)
    edit(condition, "Training_epochs\t1500", "Training_epochs\tmany")
    edit(condition, "num_var 1", "num_var 1\nDim1 12")
    edit(condition, "Dim3\t\t48210 # num nodes\n", "")
    message = problems(preset, condition)
    assert "key 'Training_epochs': expected an integer, got 'many'" in message
    assert "key 'Dim1': duplicate key (first set on line 2)" in message
    assert "key 'Dim3': required key is missing" in message


def test_latent_and_filter_rules(tmp_path):
    preset, condition = legacy_copy(tmp_path)
    edit(condition, "Latent_dim_end\t32", "Latent_dim_end\t0")
    edit(preset, "512 256 128 64", "512 two 128")
    message = problems(preset, condition)
    assert f"{preset}:4, key 'num_filter_enc': expected whole numbers separated by spaces, got '512 two 128'" in message
    # the type error stops before range checks; fix the filters and the latent rule shows
    edit(preset, "512 two 128", "512 256 128 64")
    assert "key 'Latent_dim_end': must be positive, got 0" in problems(preset, condition)


def test_preset_with_too_few_lines(tmp_path):
    preset, condition = legacy_copy(tmp_path)
    preset.write_text("data_No, init_beta_divisior, num_filter_enc, latent_conditioner_filter\n3\n2\n")
    message = problems(preset, condition)
    assert f"{preset}:3: too few lines: expected a header line then 4 value lines" in message


def test_missing_and_empty_files(tmp_path):
    preset, condition = legacy_copy(tmp_path)
    condition.write_text("  \n\n")
    message = problems(preset, tmp_path / "nowhere.txt")
    assert f"{tmp_path / 'nowhere.txt'}: file not found" in message
    assert f"{condition}: file is empty" in problems(preset, condition)


def test_second_preset_block_and_out_of_range_preset(tmp_path):
    preset, condition = legacy_copy(tmp_path)
    preset.write_text(preset.read_text() + "4\n0\n64 32\n8 8\n")
    config, _ = load_run_config(preset, condition, preset_index=2)
    assert config.data.data_number == 4 and config.model.encoder_filters == (64, 32)
    assert config.train.init_beta_divisor == 0 and config.train.init_beta == config.train.beta_target
    assert "preset 3 requested but the file holds 2" in problems(preset, condition, preset_index=3)


def test_command_line_overrides_files_and_is_named_in_errors(tmp_path):
    preset, condition = legacy_copy(tmp_path)
    config, _ = load_run_config(preset, condition, cli_values={"train.epochs": ("--epochs", 3)})
    assert config.train.epochs == 3
    config, _ = load_run_config(preset, condition, cli_values={"train.training_minutes": ("--training-minutes", 0.0)})
    assert config.train.training_minutes == 0.0
    message = problems(preset, condition, cli_values={"train.batch_size": ("--batch-size", -1)})
    assert "command line, key '--batch-size': must be positive, got -1" in message


def test_inert_legacy_key_with_a_value_is_announced(tmp_path):
    preset, condition = legacy_copy(tmp_path)
    edit(condition, "Stretch\t0", "Stretch\t1")
    _, notices = load_run_config(preset, condition)
    inert = [notice for notice in notices if "has no effect" in notice]
    assert len(inert) == 1 and "'Stretch 1' has no effect" in inert[0]


def end_to_end_files(folder: Path, decoder_start: str, extra: str = "") -> tuple:
    """The legacy pair with end-to-end training, the decoder fine-tuned, e2e_decoder_start and `extra` lines."""
    preset, condition = legacy_copy(folder)
    edit(condition, "use_e2e_training\t0", "use_e2e_training\t1")
    edit(condition, "LC_alpha    500",
         f"LC_alpha    500\ne2e_finetune_decoder\t1\ne2e_decoder_start\t{decoder_start}{extra}")
    return preset, condition


def test_a_fresh_prediction_decoder_is_read_and_needs_fine_tuning(tmp_path):
    preset, condition = end_to_end_files(tmp_path, "fresh")
    config, _ = load_run_config(preset, condition)
    assert config.end_to_end.decoder_start == "fresh" and config.end_to_end.prediction_decoder == "fresh"
    edit(condition, "e2e_finetune_decoder\t1", "e2e_finetune_decoder\t0")
    assert (f"{condition}:{line_of(condition, 'e2e_decoder_start')}, key 'e2e_decoder_start': 'fresh' trains a new "
            f"prediction decoder, which needs use_e2e_training 1 and e2e_finetune_decoder 1\n"
            f"    fix: set both to 1, or e2e_decoder_start vae") in problems(preset, condition)
    edit(condition, "e2e_decoder_start\tfresh", "e2e_decoder_start\tnew")
    assert "key 'e2e_decoder_start': must be one of vae, fresh, auto, got 'new'" in problems(preset, condition)


def test_auto_decoder_start_is_fresh_for_parameters_and_the_vaes_decoder_for_image_pixels(tmp_path):
    preset, condition = end_to_end_files(tmp_path, "auto", "\nconditioner_ensemble\t2")
    config, _ = load_run_config(preset, condition)
    assert config.conditioner.input_type == "csv" and config.end_to_end.prediction_decoder == "fresh"
    edit(condition, "input_type\tcsvs", "input_type\timage")
    config, _ = load_run_config(preset, condition)
    assert config.end_to_end.decoder_start == "vae" and config.end_to_end.prediction_decoder == "fine-tuned"
    assert config.conditioner.ensemble_members == 2  # each member fine-tunes its own copy of the VAE's decoder
    edit(condition, "e2e_decoder_start\tauto", "e2e_decoder_start\tauto\nimage_pca_components\t4")
    assert load_run_config(preset, condition)[0].end_to_end.decoder_start == "fresh"  # scores, not pixels
    edit(condition, "input_type\timage", "input_type\tcsvs")
    edit(condition, "image_pca_components\t4\n", "")
    edit(condition, "conditioner_ensemble\t2", "conditioner_ensemble\t1")
    edit(condition, "e2e_finetune_decoder\t1", "e2e_finetune_decoder\t0")
    config, _ = load_run_config(preset, condition)  # no trained decoder: auto cannot mean fresh, and is no error
    assert config.end_to_end.decoder_start == "vae" and config.end_to_end.prediction_decoder == "vae"


def test_an_ensemble_is_read_and_needs_a_trained_prediction_decoder_per_member(tmp_path):
    preset, condition = end_to_end_files(tmp_path, "fresh", "\nconditioner_ensemble\t3")
    config, _ = load_run_config(preset, condition)
    assert config.conditioner.ensemble_members == 3
    edit(condition, "e2e_decoder_start\tfresh", "e2e_decoder_start\tvae")
    assert load_run_config(preset, condition)[0].end_to_end.prediction_decoder == "fine-tuned"  # own copies
    edit(condition, "e2e_finetune_decoder\t1", "e2e_finetune_decoder\t0")
    assert (f"{condition}:{line_of(condition, 'conditioner_ensemble')}, key 'conditioner_ensemble': 3 members need "
            f"each its own trained prediction decoder (use_e2e_training 1, e2e_finetune_decoder 1)\n"
            f"    fix: set those two keys, or conditioner_ensemble 1") in problems(preset, condition)
    edit(condition, "conditioner_ensemble\t3", "conditioner_ensemble\t0")
    assert "key 'conditioner_ensemble': must be 1 to 10, got 0" in problems(preset, condition)


def test_the_gray_levels_are_read_and_a_count_out_of_range_is_named_with_its_line(tmp_path):
    preset, condition = legacy_copy(tmp_path)
    condition.write_text(condition.read_text() + "image_gray_levels\t0\n")
    assert load_run_config(preset, condition)[0].conditioner.image_gray_levels == 0
    edit(condition, "image_gray_levels\t0", "image_gray_levels\t1")
    assert (f"{condition}:{line_of(condition, 'image_gray_levels')}, key 'image_gray_levels': must be 0 or 2-32, "
            f"got 1") in problems(preset, condition)


def test_the_amplitude_parameter_is_read_and_a_column_out_of_range_is_named_with_its_line(tmp_path):
    preset, condition = legacy_copy(tmp_path)
    assert load_run_config(preset, condition)[0].conditioner.amplitude_parameter == "auto"  # not in legacy files
    condition.write_text(condition.read_text() + "amplitude_parameter\t2\n")
    config = load_run_config(preset, condition)[0]
    assert config.conditioner.amplitude_parameter == "2"
    columns = config.conditioner.num_params
    edit(condition, "amplitude_parameter\t2", f"amplitude_parameter\t{columns + 1}")
    assert (f"{condition}:{line_of(condition, 'amplitude_parameter')}, key 'amplitude_parameter': must be auto, none "
            f"or a parameter's column number 1-{columns}, got '{columns + 1}'") in problems(preset, condition)
    edit(condition, f"amplitude_parameter\t{columns + 1}", "amplitude_parameter\tstrength")
    assert "got 'strength'" in problems(preset, condition)


def test_the_image_feature_head_is_read_and_an_unknown_one_is_named_with_its_line(tmp_path):
    preset, condition = legacy_copy(tmp_path)
    condition.write_text(condition.read_text() + "image_features\tpooled\n")
    config, _ = load_run_config(preset, condition)
    assert config.conditioner.image_features == "pooled"
    edit(condition, "image_features\tpooled", "image_features\tmax")
    assert (f"{condition}:{line_of(condition, 'image_features')}, key 'image_features': must be one of pooled, "
            f"keypoints, got 'max'") in problems(preset, condition)
