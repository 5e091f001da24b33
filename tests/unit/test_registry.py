"""The analysis registry is the one home of analyses and their options."""

import importlib

import pytest

from rope_lens.analyses import ANALYSES
from rope_lens.analyses.registry import SPECS, all_options, option_users
from rope_lens.errors import InputError
from rope_lens.request import AnalysisRequest, check_options


def test_every_spec_names_a_module_with_analyze_and_summarize():
    assert set(ANALYSES) == set(SPECS)
    for spec in SPECS.values():
        module = importlib.import_module(spec.module)
        assert callable(module.analyze) and callable(module.summarize), spec.name


def test_cli_flags_come_from_the_specs():
    """Every declared option is a flag of `rope-lens analyze`, and its help names its users."""
    import argparse

    from rope_lens.commands.analyze import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    flags = {a.dest: a for a in parser._actions}
    for name, users in option_users().items():
        assert name in flags, name
        assert all(u in flags[name].help for u in users)


def test_an_analysis_specific_option_reaches_its_analysis():
    import argparse

    from rope_lens.commands.analyze import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    ns = parser.parse_args(["--analysis", "sinks", "--sink-epsilon", "0.5"])
    req = AnalysisRequest.from_namespace(ns)
    req.validate()
    assert req.extra == {"sink_epsilon": 0.5}
    assert req.analysis_options()["sink_epsilon"] == 0.5
    assert req.numeric_options()["extra"] == {"sink_epsilon": 0.5}  # part of the identity


def _request(*argv: str) -> AnalysisRequest:
    import argparse

    from rope_lens.commands.analyze import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return AnalysisRequest.from_namespace(parser.parse_args(list(argv)))


def test_a_zero_is_a_value_not_an_absent_option():
    """``--context 0`` is refused, not read as "the model's context" (0 == False once dropped
    it before any check); options left at their defaults (seed 0) are not passed."""
    req = _request("--analysis", "ablation", "--band", "0:2", "--head", "0")
    assert req.head == 0 and req.analysis_options()["head"] == 0
    with pytest.raises(InputError, match="--context must be at least 2, got 0"):
        _request("--analysis", "critical", "--context", "0").validate()
    with pytest.raises(InputError, match="--passkey-prompts must be at least 1"):
        _request("--analysis", "passkey", "--passkey-prompts", "0").validate()
    assert _request("--analysis", "passkey", "--seed", "0").extra == {}
    assert _request("--analysis", "passkey", "--seed", "3").extra == {"seed": 3}
    with pytest.raises(InputError, match="--sink-len must be at least 3"):
        check_options("sinks", {"sink_len": 1})  # the Python API is checked the same way


def test_an_option_of_another_analysis_is_refused():
    with pytest.raises(InputError, match="sink_epsilon"):
        AnalysisRequest(analysis="heads", extra={"sink_epsilon": 0.5}).validate()


def test_misspelled_option_gets_a_suggestion():
    with pytest.raises(InputError, match="did you mean 'passkey_lengths'"):
        check_options("passkey", {"passkey_lenghts": "256"})
    assert set(all_options()) >= {"head", "band", "massive_lambda", "passkey_lengths"}


def test_a_saved_tables_kind_is_read_from_its_sidecar():
    """A heads table whose columns would also match another signature is what its sidecar
    says; only frames without a sidecar fall back to their columns."""
    import pandas as pd

    from rope_lens.viz.paper import table_name_of

    df = pd.DataFrame({"mean_norm": [1.0], "chunk": [0], "head_class": ["sink"]})
    assert table_name_of(df) == "profiles"  # column signature
    assert table_name_of(df, {"analysis": "sinks"}) == "sinks"  # the sidecar decides


def test_unrotated_chunks_infinite_wavelength_is_saved(tmp_path):
    """GPT-NeoX rotates 4 of 16 dims: its other chunks have wavelength +inf, a value. The
    band-norm table saves (a NaN or -inf in a measured column would still be refused)."""
    import math

    from rope_lens.io import bad_values, load_table
    from rope_lens.models.tiny import family_model_dir
    from rope_lens.pipeline import run_request

    folder = family_model_dir("gpt_neox", tmp_path / "neox")
    req = AnalysisRequest(model=str(folder), out=str(tmp_path / "out"), progress=False)
    assert run_request(req) == 0
    df, _ = load_table(tmp_path / "out" / "band_norm.parquet")
    assert (df.wavelength == math.inf).any() and df.mean_norm.notna().all()
    broken = df.assign(mean_norm=df.mean_norm.where(df.chunk != 3, float("nan")))
    assert bad_values(broken, ("mean_norm",)) == {"mean_norm": int((df.chunk == 3).sum())}
