"""Config validation: every bad value gets a one-line error naming the key."""

import pytest

from latticeflow.config import load_config, parse_config
from latticeflow.errors import ConfigError

U1 = '[theory]\nname = "u1"\nL = 8\nbeta = 2.0\n'
PHI4 = '[theory]\nname = "phi4"\nL = 8\nm2 = -4.0\nlam = 8.0\n'


def test_defaults_and_types():
    cfg = parse_config(U1)
    assert cfg.theory.shape == (8, 8) and cfg.theory.beta == 2.0
    assert cfg.flow is None and cfg.hmc.integrator == "omelyan"
    theory = cfg.theory.build()
    assert theory.params() == {"name": "u1", "shape": [8, 8], "beta": 2.0}
    cfg = parse_config('[theory]\nname = "sun"\nshape = [4, 6]\nbeta = 1\nN = 3\n')
    assert cfg.theory.shape == (4, 6) and cfg.theory.beta == 1.0 and cfg.theory.N == 3
    cfg = parse_config(PHI4 + "[flow]\nbijection = \"spline\"\nhidden = [16, 16]\n")
    assert cfg.flow.bijection == "spline" and cfg.flow.hidden == (16, 16) and cfg.flow.z2
    assert parse_config('[theory]\nname = "phi4"\nL = 4\ndim = 3\nm2 = 1.0\nlam = 0\n').theory.shape == (4, 4, 4)


@pytest.mark.parametrize("text,key", [
    ('[theory]\nname = "x"\nL = 8\n', "theory.name"),
    ('[theory]\nname = "u1"\nL = 1\nbeta = 2.0\n', "theory.L"),
    ('[theory]\nname = "u1"\nL = 8\nbeta = 0.0\n', "theory.beta"),
    ('[theory]\nname = "u1"\nL = 8\nbeta = -1.0\n', "theory.beta"),
    ('[theory]\nname = "u1"\nL = 8\n', "theory.beta"),
    ('[theory]\nname = "u1"\nL = 8\nbeta = "2"\n', "theory.beta"),
    ('[theory]\nname = "sun"\nL = 8\nbeta = 2.0\nN = 4\n', "theory.N"),
    ('[theory]\nname = "phi4"\nL = 8\nm2 = -4.0\n', "theory.lam"),
    ('[theory]\nname = "phi4"\nL = 8\nm2 = -4.0\nlam = -1.0\n', "theory.lam"),
    ('[theory]\nname = "phi4"\nL = 8\nm2 = -4.0\nlam = 1.0\nbeta = 1.0\n', "theory.beta"),
    ('[theory]\nname = "u1"\nL = 8\nbeta = 2.0\ncolour = 3\n', "theory.colour"),
    ('[theory]\nname = "u1"\nL = 8\nshape = [8, 8]\nbeta = 2.0\n', "theory.shape"),
    ('[theory]\nname = "u1"\nL = 8\ndim = 1\nbeta = 2.0\n', "theory.dim"),
    ('[theory]\nname = "phi4"\nL = 7\nm2 = -4.0\nlam = 8.0\n[flow]\n', "theory.L"),
    ('[theory]\nname = "u1"\nL = 6\nbeta = 2.0\n[flow]\n', "theory.L"),
    ('[theory]\nname = "u1"\nshape = [8, 6]\nbeta = 2.0\n[flow]\n', "theory.shape"),
    ('[theory]\nname = "phi4"\nL = 8\nm2 = -4.0\nlam = 0.0\n', "theory.m2"),
    ('[theory]\nname = "phi4"\nL = 8\nm2 = 0.0\nlam = 0.0\n', "theory.m2"),
    (PHI4 + "[train]\nanneal_coupling = \"lam\"\nanneal_from = 0.0\nsteps = 2000\n", "train.anneal_from"),
    (U1 + "[train]\nanneal_coupling = \"kappa\"\n", "train.anneal_coupling"),
    (PHI4 + "[sample]\nflow_per_step = 100001\n", "sample.flow_per_step"),
    (PHI4 + "[sample]\nhmc_per_step = 100001\n", "sample.hmc_per_step"),
    (PHI4 + "[train]\nbatch_size = -4\n", "train.batch_size"),
    (PHI4 + "[train]\nlr = 0\n", "train.lr"),
    (PHI4 + "[train]\nestimator = \"magic\"\n", "train.estimator"),
    (PHI4 + "[sample]\nchains = 0\n", "sample.chains"),
    (PHI4 + "[hmc]\nintegrator = \"euler\"\n", "hmc.integrator"),
    (PHI4 + "[hmc]\ntarget_acceptance = 1.5\n", "hmc.target_acceptance"),
    (PHI4 + "[flow]\nkernel_size = 4\n", "flow.kernel_size"),
    (PHI4 + "[flow]\nbijection = \"ncp\"\n", "flow.bijection"),
    (PHI4 + "[flow]\nhidden = [8, 0]\n", "flow.hidden"),
    (U1 + "[flow]\nz2 = true\n", "flow.z2"),
    (PHI4 + "[mystery]\n", "mystery"),
    ("[flow]\nlayers = 4\n", "theory"),
])
def test_bad_values_name_the_key(text, key):
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    message = str(info.value)
    assert message.startswith(key), message
    assert "\n" not in message


def test_invalid_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_config("[theory\nname=")
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.toml")
    path = tmp_path / "m.toml"
    path.write_text(U1)
    cfg = load_config(path)
    assert cfg.name == "m" and cfg.text == U1


def test_docs_config_md_is_generated_from_the_declarations():
    """docs/config.md is the output of ``python -m latticeflow.config`` (regenerate it after
    changing a key)."""
    from pathlib import Path

    from latticeflow.config import reference_markdown

    doc = Path(__file__).resolve().parents[1] / "docs" / "config.md"
    assert doc.read_text() == reference_markdown()


def test_effective_config_round_trips_and_applies_overrides():
    import dataclasses

    cfg = parse_config(PHI4 + "[flow]\nbijection = \"spline\"\nbins = 4\n[train]\nsteps = 7\n")
    again = parse_config(cfg.toml)
    assert (again.theory, again.flow, again.train, again.hmc, again.sample) == \
        (cfg.theory, cfg.flow, cfg.train, cfg.hmc, cfg.sample)
    assert "bound = 5.0" in cfg.toml and "steps = 7" in cfg.toml  # defaults filled in
    changed = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, minutes=2.5))
    assert parse_config(changed.toml).train.minutes == 2.5 and "minutes" not in changed.text


@pytest.mark.parametrize("text,key", [
    (U1 + "[flow]\nbijection = \"spline\"\ncomponents = 6\n", "flow.components"),
    (PHI4 + "[flow]\nbins = 4\n", "flow.bins"),
    (PHI4 + "[flow]\nbijection = \"affine\"\nbound = 3.0\n", "flow.bound"),
    (U1 + "[flow]\nmomentum_scaling = true\n", "flow.momentum_scaling"),
    ('[theory]\nname = "u1"\nL = 8\nbeta = inf\n', "theory.beta"),
    ('[theory]\nname = "phi4"\nL = 8\nm2 = nan\nlam = 1.0\n', "theory.m2"),
    (PHI4 + "[train]\nlr = inf\n", "train.lr"),
    (PHI4 + "[hmc]\ntrajectory_length = inf\n", "hmc.trajectory_length"),
    (PHI4 + "[flow]\nbijection = \"spline\"\nbound = inf\n", "flow.bound"),
    ('[theory]\nname = "sun"\nL = 8\nbeta = 2.0\nN = 2\n[flow]\ncomponents = 6\n', "flow.components"),
])
def test_keys_of_other_bijections_and_non_finite_numbers_are_refused(text, key):
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert str(info.value).startswith(key) and "\n" not in str(info.value), str(info.value)


def test_files_latticeflow_wrote_keep_loading_when_new_checks_appear():
    """Run directories, checkpoints and weights store the config they ran with; checks added
    later (λ = 0 needs m² > 0, a schedule's coupling) refuse new model files only."""
    old_free_field = '[theory]\nname = "phi4"\nL = 8\nm2 = 0.0\nlam = 0.0\n'
    stray_coupling = U1 + '[train]\nanneal_coupling = "lam"\n'
    for text in (old_free_field, stray_coupling):
        with pytest.raises(ConfigError):
            parse_config(text)
        parse_config(text, legacy=True)


def test_files_written_by_latticeflow_0_1_drop_keys_of_other_bijections():
    text = U1 + "[flow]\nbijection = \"spline\"\ncomponents = 6\nbins = 4\n"
    cfg = parse_config(text, legacy=True)
    assert cfg.flow.bins == 4 and not hasattr(cfg.flow, "components")


def test_the_sample_samplers_are_the_registered_ones_but_hmc():
    """``[sample] sampler`` accepts every registered kind that ``latticeflow sample`` makes
    (``hmc`` is its own command's), and files written before the weighting was recorded
    mean by each built-in name what its kind declares."""
    from latticeflow import ensemble
    from latticeflow.samplers import sampler_kind, sampler_names

    assert set(sampler_names()) >= set(ensemble.LEGACY_SAMPLERS) - {"hmc"} and "hmc" not in sampler_names()
    for name in sampler_names():
        assert parse_config(U1 + f'[sample]\nsampler = "{name}"\n').sample.sampler == name
    for name, legacy in ensemble.LEGACY_SAMPLERS.items():
        weights = sampler_kind(name).weights
        assert (weights.column, weights.reweighted) == (legacy.column, legacy.reweighted)
    with pytest.raises(ConfigError, match="sample.sampler: must be one of 'flow-mcmc', 'flow-iid'"):
        parse_config(U1 + '[sample]\nsampler = "hmc"\n')
